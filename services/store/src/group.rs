//! Group commit: small write transactions from many concurrent tasks are
//! committed together, one transaction for all of them.
//!
//! A caller hands [`GroupWriter::write`] a closure that does its writes on
//! the transaction it is given. The writer runs each closure inside its own
//! savepoint, so one that fails leaves no trace and does not spoil the
//! others; then it commits once and only then tells every caller its result.
//! Nothing waits for a batch to fill: a batch is whatever queued while the
//! previous one committed, so an idle hub pays no extra latency and a busy
//! one pays one commit per batch instead of one per write.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::{mpsc, oneshot};

use crate::{Db, Error, Tx};

/// A boxed future borrowing the transaction.
pub type TxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

type Finish = Box<dyn FnOnce(Option<String>) + Send>;

trait Job: Send {
    fn run<'a>(self: Box<Self>, tx: &'a mut Tx) -> TxFuture<'a, Finish>;
    fn abort(self: Box<Self>, reason: String);
}

struct Write<F, T, E> {
    work: F,
    done: oneshot::Sender<Result<T, E>>,
}

impl<F, T, E> Job for Write<F, T, E>
where
    F: for<'a> FnOnce(&'a mut Tx) -> TxFuture<'a, Result<T, E>> + Send + 'static,
    T: Send + 'static,
    E: From<Error> + From<sqlx::Error> + Send + 'static,
{
    fn run<'a>(self: Box<Self>, tx: &'a mut Tx) -> TxFuture<'a, Finish> {
        Box::pin(async move {
            let Write { work, done } = *self;
            let result = savepoint(tx, work).await;
            let finish: Finish = Box::new(move |failed: Option<String>| {
                let _ = done.send(match failed {
                    None => result,
                    Some(reason) => Err(E::from(Error::GroupCommit(reason))),
                });
            });
            finish
        })
    }

    fn abort(self: Box<Self>, reason: String) {
        let _ = self.done.send(Err(E::from(Error::GroupCommit(reason))));
    }
}

async fn savepoint<F, T, E>(tx: &mut Tx, work: F) -> Result<T, E>
where
    F: for<'a> FnOnce(&'a mut Tx) -> TxFuture<'a, Result<T, E>>,
    E: From<sqlx::Error>,
{
    sqlx::query("SAVEPOINT grouped").execute(&mut **tx).await?;
    match work(&mut *tx).await {
        Ok(value) => {
            sqlx::query("RELEASE SAVEPOINT grouped").execute(&mut **tx).await?;
            Ok(value)
        }
        Err(e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT grouped").execute(&mut **tx).await?;
            sqlx::query("RELEASE SAVEPOINT grouped").execute(&mut **tx).await?;
            Err(e)
        }
    }
}

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

impl GroupWriter {
    /// Starts the writer task for `db`, committing up to `max_batch` writes at once.
    pub fn start(db: Db, max_batch: usize) -> GroupWriter {
        let (jobs, mut queue) = mpsc::channel::<Box<dyn Job>>(max_batch.max(1) * 4);
        let max_batch = max_batch.max(1);
        tokio::spawn(async move {
            while let Some(first) = queue.recv().await {
                let mut batch = vec![first];
                while batch.len() < max_batch {
                    match queue.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let mut tx = match db.begin().await {
                    Ok(tx) => tx,
                    Err(e) => {
                        let reason = e.to_string();
                        batch.into_iter().for_each(|job| job.abort(reason.clone()));
                        continue;
                    }
                };
                let mut finishes = Vec::with_capacity(batch.len());
                for job in batch {
                    finishes.push(job.run(&mut tx).await);
                }
                let failed = tx.commit().await.err().map(|e| e.to_string());
                for finish in finishes {
                    finish(failed.clone());
                }
            }
        });
        GroupWriter { jobs }
    }

    /// Runs `work` in the next group transaction and returns its result once
    /// that transaction has committed. If `work` fails, its writes are rolled
    /// back and the others' are not.
    pub async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: for<'a> FnOnce(&'a mut Tx) -> TxFuture<'a, Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: From<Error> + From<sqlx::Error> + Send + 'static,
    {
        let (done, result) = oneshot::channel();
        self.jobs.send(Box::new(Write { work, done })).await.map_err(|_| E::from(Error::WriterStopped))?;
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
        let writer = GroupWriter::start(db.clone(), 64);
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
        assert_eq!(failed, 20);
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM bus_cursors").fetch_one(db.pool()).await.expect("count").try_get("n").expect("n");
        assert_eq!(n, 180, "every good write is there, nothing of a failed one");
    }
}
