//! The 12345 knowledge base.
//!
//! Entries live in the hub's database ([`EntryStore`]), which is the source
//! of truth. Each hub node derives its own Tantivy index ([`KbIndex`]) from
//! them and keeps it current by following `kb_changes`, the change stream
//! written in the same transaction as every change. Chinese text is analysed
//! with jieba (through `tantivy-jieba`), CJK bigrams, pinyin bigrams and
//! query-time synonyms ([`analysis`]).

pub mod analysis;
pub mod api;
mod entry;
mod error;
pub mod import;
mod index;
mod snippet;
pub mod pages;
mod store;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use civichub_store::Db;

pub use entry::{Audience, Entry, EntryInput, Status, TagsInput, ValidEntry, format_date, parse_date};
pub use error::{Error, Result};
pub use index::{Facets, Hit, KbIndex, MAX_QUERY_CHARS, MAX_RESULT_WINDOW, SearchRequest, SearchResponse, Visibility, html_escape};
pub use store::{EntryStore, REBUILD, Version};

/// How many of the last changes a node re-reads when it opens its index: it
/// does not know which numbers below its last were still missing when it
/// stopped, and re-applying a change is harmless.
const LOOKBACK: i64 = 64;

/// How long the follower waits for a missing change number. On PostgreSQL a
/// transaction takes its number when it inserts the change and shows it when
/// it commits, after higher numbers may have been applied; a transaction
/// rolled back leaves its number unused for good.
const GAP_WAIT: Duration = Duration::from_secs(600);

/// How far below the top a rebuild looks for missing change numbers to
/// watch: a transaction still open then has its number near the top.
const REBUILD_WATCH: i64 = 1000;

/// The most missing change numbers the follower watches at once.
const MAX_GAPS: usize = 10_000;

/// Runs CPU-heavy index work without stalling the other tasks of an
/// async worker thread (where the runtime allows it).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The knowledge base service: the entry table and this node's index.
#[derive(Debug)]
pub struct KnowledgeBase {
    /// The entries.
    pub entries: EntryStore,
    /// This node's index.
    pub index: KbIndex,
    follower: tokio::sync::Mutex<Follower>,
    wakeup: tokio::sync::Notify,
}

#[derive(Clone, Debug, Default)]
struct Follower {
    /// The highest change number applied.
    applied: i64,
    /// Numbers below `applied` not seen yet, with when they were found
    /// missing (see [`GAP_WAIT`]).
    gaps: std::collections::BTreeMap<i64, std::time::Instant>,
}

impl Follower {
    /// A follower whose index holds the changes up to `applied`, the last
    /// [`LOOKBACK`] of them to be read again.
    fn at(applied: i64) -> Follower {
        let now = std::time::Instant::now();
        Follower { applied, gaps: ((applied - LOOKBACK + 1).max(1)..=applied).map(|seq| (seq, now)).collect() }
    }

    /// Takes in the changes read (those after `applied`, oldest first, then
    /// those found for gaps) and returns the ones to apply: every number
    /// skipped becomes a gap, a gap found is closed, and rebuild requests
    /// below `applied` are left out (the index there already reflects them).
    fn take(&mut self, after: Vec<(i64, String)>, found: Vec<(i64, String)>) -> Vec<(i64, String)> {
        let now = std::time::Instant::now();
        let mut fresh = Vec::with_capacity(after.len() + found.len());
        for (seq, id) in found {
            if self.gaps.remove(&seq).is_some() && id != REBUILD {
                fresh.push((seq, id));
            }
        }
        let mut next = self.applied + 1;
        for (seq, id) in after {
            for missing in next..seq {
                self.gaps.insert(missing, now);
            }
            next = next.max(seq + 1);
            fresh.push((seq, id));
        }
        self.applied = self.applied.max(next - 1);
        self.gaps.retain(|_, since| now.duration_since(*since) < GAP_WAIT);
        while self.gaps.len() > MAX_GAPS {
            if let Some((seq, _)) = self.gaps.pop_first() {
                tracing::warn!("knowledge base index follower: change {seq} still missing, no longer watched");
            }
        }
        fresh
    }
}

impl KnowledgeBase {
    /// Opens the entries in `db` and the index in `index_dir` (in memory when
    /// `None`), and brings the index up to date.
    pub async fn open(db: Db, index_dir: Option<&Path>) -> Result<Arc<KnowledgeBase>> {
        let index = KbIndex::open(index_dir, analysis::Synonyms::builtin())?;
        let applied = index.applied()?;
        let kb = Arc::new(KnowledgeBase {
            entries: EntryStore::new(db),
            index,
            follower: tokio::sync::Mutex::new(Follower::at(applied)),
            wakeup: tokio::sync::Notify::new(),
        });
        let last = kb.entries.last_change().await?;
        if applied == 0 || applied > last {
            // A new index, or one from another database: rebuild it.
            kb.reindex().await?;
        } else {
            kb.catch_up().await?;
        }
        Ok(kb)
    }

    /// Rebuilds this node's index from the entry table.
    pub async fn reindex(&self) -> Result<usize> {
        let mut follower = self.follower.lock().await;
        self.rebuild(&mut follower).await
    }

    /// [`reindex`](Self::reindex) with the follower in hand.
    async fn rebuild(&self, follower: &mut Follower) -> Result<usize> {
        let seq = self.entries.last_change().await?;
        let entries = self.entries.published().await?;
        blocking(|| self.index.rebuild(&entries, seq))?;
        // What commits later under a lower number is still to come: the
        // numbers missing below the top, and the gaps already watched.
        let floor = (seq - REBUILD_WATCH).max(0);
        let present: std::collections::BTreeSet<i64> = self.entries.change_numbers_in(floor, seq).await?.into_iter().collect();
        let now = std::time::Instant::now();
        let mut gaps = std::mem::take(&mut follower.gaps);
        gaps.retain(|s, _| *s < seq);
        for missing in (floor + 1..=seq).filter(|n| !present.contains(n)) {
            gaps.entry(missing).or_insert(now);
        }
        *follower = Follower { applied: seq, gaps };
        Ok(entries.len())
    }

    /// Applies every change not yet in this node's index; returns how many.
    /// The follower moves on only once the index has what it read: a
    /// failure leaves it where it was, to read the same changes again.
    pub async fn catch_up(&self) -> Result<usize> {
        let mut follower = self.follower.lock().await;
        let mut applied_count = 0;
        loop {
            let after = self.entries.changes_after(follower.applied, 1000).await?;
            let gaps: Vec<i64> = follower.gaps.keys().copied().collect();
            let found = if gaps.is_empty() { Vec::new() } else { self.entries.changes_numbered(&gaps).await? };
            let mut next = follower.clone();
            let fresh = next.take(after, found);
            if fresh.is_empty() {
                *follower = next;
                return Ok(applied_count);
            }
            if fresh.iter().any(|(_, id)| id == REBUILD) {
                // The rebuild reads everything committed; the gaps found on the way stay watched.
                let mut rebuilding = next;
                let rebuilt = self.rebuild(&mut rebuilding).await?;
                *follower = rebuilding;
                tracing::info!("knowledge base index rebuilt on request: {rebuilt} entries");
                applied_count += fresh.len();
                continue;
            }
            let mut ids: Vec<String> = fresh.iter().map(|(_, id)| id.clone()).collect();
            ids.sort();
            ids.dedup();
            let entries = self.entries.get_many(&ids).await?;
            let top = next.applied;
            blocking(|| self.index.apply(&ids, &entries, top))?;
            *follower = next;
            applied_count += fresh.len();
        }
    }

    /// Keeps the index current until the process ends: on a local change at
    /// once, otherwise every 200 ms (changes made on other nodes).
    pub fn spawn_follower(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let kb = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = kb.catch_up().await {
                    tracing::warn!("knowledge base index follower: {e}");
                }
                tokio::select! {
                    _ = kb.wakeup.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        })
    }

    /// Tells the follower a change was committed on this node.
    pub fn changed(&self) {
        self.wakeup.notify_one();
    }

    /// Creates an entry.
    pub async fn create(&self, entry: ValidEntry, actor: Option<&str>) -> Result<Entry> {
        let e = self.entries.create(entry, actor).await?;
        self.changed();
        Ok(e)
    }

    /// Replaces an entry.
    pub async fn update(&self, id: &str, entry: ValidEntry, actor: Option<&str>) -> Result<Entry> {
        let e = self.entries.update(id, entry, actor).await?;
        self.changed();
        Ok(e)
    }

    /// Publishes or expires an entry.
    pub async fn set_status(&self, id: &str, status: Status, actor: Option<&str>) -> Result<Entry> {
        let e = self.entries.set_status(id, status, actor).await?;
        self.changed();
        Ok(e)
    }
}
