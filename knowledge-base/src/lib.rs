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

/// How far back the follower re-reads the change stream: on PostgreSQL a
/// change number can become visible after a higher one (concurrent
/// transactions), and re-applying a change is harmless.
const LOOKBACK: i64 = 64;

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

#[derive(Debug, Default)]
struct Follower {
    applied: i64,
    recent: std::collections::BTreeSet<i64>,
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
            follower: tokio::sync::Mutex::new(Follower { applied, ..Default::default() }),
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
        let seq = self.entries.last_change().await?;
        let entries = self.entries.published().await?;
        blocking(|| self.index.rebuild(&entries, seq))?;
        follower.applied = seq;
        follower.recent.clear();
        Ok(entries.len())
    }

    /// Applies every change not yet in this node's index; returns how many.
    pub async fn catch_up(&self) -> Result<usize> {
        let mut follower = self.follower.lock().await;
        let mut applied_count = 0;
        loop {
            let changes = self.entries.changes_after(follower.applied - LOOKBACK, 1000).await?;
            // Within the lookback, re-apply what this process has not seen (a
            // change can commit after a higher-numbered one), except rebuild
            // requests: the index at `applied` already reflects those.
            let fresh: Vec<(i64, String)> = changes
                .into_iter()
                .filter(|(seq, id)| *seq > follower.applied || (id != REBUILD && !follower.recent.contains(seq)))
                .collect();
            if fresh.is_empty() {
                return Ok(applied_count);
            }
            if fresh.iter().any(|(_, id)| id == REBUILD) {
                drop(follower);
                let rebuilt = self.reindex().await?;
                tracing::info!("knowledge base index rebuilt on request: {rebuilt} entries");
                follower = self.follower.lock().await;
                follower.recent.extend(fresh.iter().map(|(seq, _)| *seq));
                applied_count += fresh.len();
                continue;
            }
            let mut ids: Vec<String> = fresh.iter().map(|(_, id)| id.clone()).collect();
            ids.sort();
            ids.dedup();
            let entries = self.entries.get_many(&ids).await?;
            let top = fresh.iter().map(|(seq, _)| *seq).max().unwrap_or(follower.applied).max(follower.applied);
            blocking(|| self.index.apply(&ids, &entries, top))?;
            follower.applied = top;
            follower.recent.extend(fresh.iter().map(|(seq, _)| *seq));
            let floor = top - LOOKBACK;
            follower.recent.retain(|s| *s > floor);
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
