//! Group commit: small write transactions from many concurrent tasks are
//! committed together, one transaction for all of them.
//!
//! A caller hands [`GroupWriter::write`] a closure that does its writes on
//! the transaction it is given. The writer runs the closures of a batch one
//! after another in one transaction and commits once; only then does it
//! tell every caller its result. Nothing waits for a batch to fill: a batch
//! is whatever queued while the previous one committed, so an idle hub pays
//! no extra latency and a busy one pays one commit per batch instead of one
//! per write.
//!
//! If one closure fails (or the commit does), the whole batch is rolled back
//! and each closure runs again in a transaction of its own, so a failure
//! leaves no trace and does not spoil the others. That is why closures must
//! be `Clone`: the writer keeps a copy to run again. The common case pays no
//! savepoints.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::{mpsc, oneshot};

use crate::{Backend, Db, Error, Tx};

/// A boxed future borrowing the transaction.
pub type TxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

trait Job: Send {
    /// Runs a copy of the work on `tx`; true when it succeeded. The result
    /// is kept for [`Job::finish`].
    fn run<'a>(&'a mut self, tx: &'a mut Tx) -> TxFuture<'a, bool>;
    /// Answers the caller: its kept result if `failed` is `None`.
    fn finish(self: Box<Self>, failed: Option<String>);
}

struct Write<F, T, E> {
    work: F,
    result: Option<Result<T, E>>,
    done: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> Job for Write<F, T, E>
where
    F: for<'a> FnOnce(&'a mut Tx) -> TxFuture<'a, Result<T, E>> + Clone + Send + 'static,
    T: Send + 'static,
    E: From<Error> + From<sqlx::Error> + Send + 'static,
{
    fn run<'a>(&'a mut self, tx: &'a mut Tx) -> TxFuture<'a, bool> {
        Box::pin(async move {
            let result = (self.work.clone())(tx).await;
            let ok = result.is_ok();
            self.result = Some(result);
            ok
        })
    }

    fn finish(self: Box<Self>, failed: Option<String>) {
        let result = match (failed, self.result) {
            (None, Some(result)) => result,
            (Some(reason), _) => Err(E::from(Error::GroupCommit(reason))),
            (None, None) => Err(E::from(Error::GroupCommit("the write did not run".into()))),
        };
        let _ = self.done.send(result);
    }
}

/// The longest a batch may take before it is abandoned (rolled back, its
/// callers told it failed).
const BATCH_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// How many batches a writer has in flight at once on PostgreSQL.
const PARALLEL_BATCHES: usize = 4;

/// Commits the writes of concurrent callers together.
#[derive(Clone)]
pub struct GroupWriter {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl std::fmt::Debug for GroupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupWriter")
    }
}

/// Runs every job of `batch` in one transaction; `Err` (with everything
/// rolled back) if a job or the commit failed.
async fn together(db: &Db, batch: &mut [Box<dyn Job>]) -> Result<(), String> {
    let mut tx = db.begin().await.map_err(|e| e.to_string())?;
    for job in batch.iter_mut() {
        if !job.run(&mut tx).await {
            // Dropping the transaction rolls it back.
            return Err("a write failed".into());
        }
    }
    tx.commit().await.map_err(|e| e.to_string())
}

/// Runs one job in a transaction of its own and answers its caller.
async fn alone(db: &Db, mut job: Box<dyn Job>) {
    let mut tx = match db.begin().await {
        Ok(tx) => tx,
        Err(e) => return job.finish(Some(e.to_string())),
    };
    if job.run(&mut tx).await {
        let failed = tx.commit().await.err().map(|e| e.to_string());
        job.finish(failed);
    } else {
        // Its own error, not the batch's.
        let _ = tx.rollback().await;
        job.finish(None);
    }
}

/// Batch sizes and times, logged at debug level every ten seconds.
#[derive(Default)]
struct Stats {
    since: Option<std::time::Instant>,
    batches: u64,
    writes: u64,
    busy: std::time::Duration,
    longest: std::time::Duration,
}

impl Stats {
    /// Counts one batch of `writes` writes that took `took`; `name` says
    /// whose batches they are in the log line.
    fn record(&mut self, name: &str, writes: usize, took: std::time::Duration) {
        let since = *self.since.get_or_insert_with(std::time::Instant::now);
        self.batches += 1;
        self.writes += writes as u64;
        self.busy += took;
        self.longest = self.longest.max(took);
        if since.elapsed() >= std::time::Duration::from_secs(10) {
            tracing::debug!(
                "{name}: {} writes in {} batches ({:.1} per batch), {:.2} ms per batch, longest {:.1} ms, busy {:.0} %",
                self.writes,
                self.batches,
                self.writes as f64 / self.batches as f64,
                self.busy.as_secs_f64() * 1e3 / self.batches as f64,
                self.longest.as_secs_f64() * 1e3,
                self.busy.as_secs_f64() * 100.0 / since.elapsed().as_secs_f64(),
            );
            *self = Stats::default();
        }
    }
}

impl GroupWriter {
    /// Starts the writer task for `db`, committing up to `max_batch` writes
    /// at once; `name` says whose batches they are in the debug log.
    pub fn start(db: Db, max_batch: usize, name: &'static str) -> GroupWriter {
        let (jobs, mut queue) = mpsc::channel::<Box<dyn Job>>(max_batch.max(1) * 4);
        let max_batch = max_batch.max(1);
        let backend = db.backend();
        // SQLite writes one transaction at a time whatever we do. PostgreSQL
        // takes several at once, and a batch spends most of its time waiting
        // for the server's answers and its commit's sync: several batches in
        // flight keep its connections busy instead of one.
        let in_flight = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres => PARALLEL_BATCHES,
        };
        let run = async move {
            let stats = std::sync::Arc::new(std::sync::Mutex::new(Stats::default()));
            let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(in_flight));
            while let Some(first) = queue.recv().await {
                // A batch starts when a slot is free; whatever queued while
                // waiting for one joins it.
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let started = std::time::Instant::now();
                let n = batch.len();
                // Each batch in a task of its own, within a time limit: a write
                // that panics or hangs (a lock never granted) fails its batch's
                // callers (their answer channels close: `WriterStopped`), and the
                // writer goes on with the next batch.
                let db = db.clone();
                let run = tokio::spawn(async move {
                    if batch.len() == 1 {
                        alone(&db, batch.pop().expect("one job")).await;
                        return;
                    }
                    match together(&db, &mut batch).await {
                        Ok(()) => batch.into_iter().for_each(|job| job.finish(None)),
                        Err(reason) => {
                            tracing::debug!("group commit of {} writes failed ({reason}); writing one by one", batch.len());
                            for job in batch {
                                alone(&db, job).await;
                            }
                        }
                    }
                });
                let stats = stats.clone();
                tokio::spawn(async move {
                    let abort = run.abort_handle();
                    match tokio::time::timeout(BATCH_LIMIT, run).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::error!("{name}: a batch of {n} writes failed: {e}"),
                        Err(_) => {
                            abort.abort();
                            tracing::error!("{name}: a batch of {n} writes took longer than {BATCH_LIMIT:?} and was abandoned");
                        }
                    }
                    if let Ok(mut stats) = stats.lock() {
                        stats.record(name, n, started.elapsed());
                    }
                    drop(slot);
                });
            }
            // The queue closed: let the batches in flight finish (on SQLite
            // the writer's runtime ends with this future, and its tasks with it).
            let _ = slots.acquire_many(in_flight as u32).await;
        };
        // On SQLite each statement is a hand-off to the connection's own
        // thread and back; on the hub's runtime every such step of the writer
        // would wait its turn behind the request tasks, so the writer runs on
        // a thread and runtime of its own. (PostgreSQL connections do their
        // I/O on the runtime that opened them, which a writer's runtime would
        // not outlive: there it stays on the caller's runtime.)
        let own_runtime = match backend {
            Backend::Sqlite => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .inspect_err(|e| tracing::error!("{name}: no runtime of its own ({e}); writing on the caller's"))
                .ok(),
            Backend::Postgres => None,
        };
        match own_runtime {
            Some(runtime) => {
                if let Err(e) = std::thread::Builder::new().name(name.into()).spawn(move || runtime.block_on(run)) {
                    tracing::error!("{name}: could not start its thread ({e}); its writes will fail");
                }
            }
            None => {
                tokio::spawn(run);
            }
        }
        GroupWriter { jobs }
    }

    /// Runs `work` in the next group transaction and returns its result once
    /// that transaction has committed. If `work` fails, nothing it wrote
    /// stays, and the others' writes do. `work` may run more than once (see
    /// the module documentation); only one run's writes are ever committed.
    pub async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: for<'a> FnOnce(&'a mut Tx) -> TxFuture<'a, Result<T, E>> + Clone + Send + 'static,
        T: Send + 'static,
        E: From<Error> + From<sqlx::Error> + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        self.jobs.send(Box::new(Write { work, result: None, done })).await.map_err(|_| E::from(Error::WriterStopped))?;
        result.await.map_err(|_| E::from(Error::WriterStopped))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DbUrl, Row};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_commit_together_and_a_failure_is_isolated() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::connect(&DbUrl::sqlite_in(dir.path())).await.expect("db");
        let writer = GroupWriter::start(db.clone(), 64, "test writer");
        sqlx::query("INSERT INTO bus_cursors (name, position) VALUES ('taken', 0)").execute(db.pool()).await.expect("seed");
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    writer
                        .write(move |tx| {
                            Box::pin(async move {
                                sqlx::query("INSERT INTO bus_cursors (name, position) VALUES ($1, $2)")
                                    .bind(format!("c{i}"))
                                    .bind(i as i64)
                                    .execute(&mut **tx)
                                    .await?;
                                if i % 10 == 0 {
                                    // A second insert of the same key fails; the first must roll back too.
                                    sqlx::query("INSERT INTO bus_cursors (name, position) VALUES ($1, 0)")
                                        .bind(format!("c{i}"))
                                        .execute(&mut **tx)
                                        .await?;
                                }
                                if i % 25 == 0 {
                                    // A deferred row that fails only at commit.
                                    tx.insert_later("INSERT INTO bus_cursors (name, position)", "", vec!["taken".into(), 1.into()]);
                                }
                                Ok::<_, Error>(i)
                            })
                        })
                        .await
                })
            })
            .collect();
        let mut failed = 0;
        for t in tasks {
            match t.await.expect("task") {
                Ok(_) => {}
                Err(_) => failed += 1,
            }
        }
        assert_eq!(failed, 24, "i % 10 == 0 fail in their work, i % 25 == 0 at commit");
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM bus_cursors").fetch_one(db.pool()).await.expect("count").try_get("n").expect("n");
        assert_eq!(n, 177, "every good write is there (and the seed), nothing of a failed one");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_panics_fails_its_caller_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::connect(&DbUrl::sqlite_in(dir.path())).await.expect("db");
        let writer = GroupWriter::start(db.clone(), 64, "test writer");
        let insert = |name: &'static str, panics: bool| {
            let writer = writer.clone();
            async move {
                writer
                    .write(move |tx| {
                        Box::pin(async move {
                            sqlx::query("INSERT INTO bus_cursors (name, position) VALUES ($1, 0)").bind(name).execute(&mut **tx).await?;
                            assert!(!panics, "a bug in a write");
                            Ok::<_, Error>(())
                        })
                    })
                    .await
            }
        };
        assert!(insert("lost", true).await.is_err(), "the caller hears its write failed");
        insert("kept", false).await.expect("the writer still writes");
        let names: Vec<String> =
            sqlx::query("SELECT name FROM bus_cursors").fetch_all(db.pool()).await.expect("rows").iter().map(|r| r.try_get("name").expect("name")).collect();
        assert_eq!(names, ["kept"], "nothing of the write that panicked");
    }
}
