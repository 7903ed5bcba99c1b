//! Group commit for token issue: concurrent requests' token and audit rows
//! are written together, in one transaction with one multi-row INSERT per
//! table, and each request is answered once its rows are durable.
//!
//! On SQLite every write transaction runs alone; batching turns N
//! transactions of four statements each into one of four.

use civichub_store::{Db, Result as StoreResult, Tx};
use tokio::sync::{mpsc, oneshot};

use crate::{Error, Result};

/// One row of `tokens`.
#[derive(Clone, Debug)]
#[allow(missing_docs)]
pub struct TokenRow {
    pub token_hash: String,
    pub kind: &'static str,
    pub family: String,
    pub client_id: String,
    pub user_id: Option<String>,
    pub sid: Option<String>,
    pub scope: String,
    pub grant_json: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// One row of `audit_events`.
#[derive(Clone, Debug)]
#[allow(missing_docs)]
pub struct AuditRow {
    pub at: i64,
    pub event: &'static str,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub ip: Option<String>,
    pub detail: String,
}

/// One row of `auth_codes`.
#[derive(Clone, Debug)]
#[allow(missing_docs)]
pub struct CodeRow {
    pub code_hash: String,
    pub grant_json: String,
    pub family: String,
    pub expires_at: i64,
}

/// What one request needs written.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    /// New tokens.
    pub tokens: Vec<TokenRow>,
    /// New authorization codes.
    pub codes: Vec<CodeRow>,
    /// `(sid, client_id)`: a client received a grant in an SSO session.
    pub session_clients: Vec<(String, String)>,
    /// Audit records.
    pub audit: Vec<AuditRow>,
}

struct Job {
    rows: Rows,
    done: oneshot::Sender<std::result::Result<(), String>>,
}

/// Hands rows to the writer task.
#[derive(Clone, Debug)]
pub struct TokenWriter {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

/// The most jobs one transaction takes.
const BATCH: usize = 64;

impl TokenWriter {
    /// Starts the writer task on `db`.
    pub fn start(db: Db) -> TokenWriter {
        let (jobs, rx) = mpsc::channel(1024);
        tokio::spawn(run(db, rx));
        TokenWriter { jobs }
    }

    /// Writes `rows`; returns once they are committed.
    pub async fn write(&self, rows: Rows) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.jobs
            .send(Job { rows, done })
            .await
            .map_err(|_| Error::Invalid("the token writer has stopped".into()))?;
        wait.await
            .map_err(|_| Error::Invalid("the token writer has stopped".into()))?
            .map_err(Error::Invalid)
    }
}

async fn run(db: Db, mut rx: mpsc::Receiver<Job>) {
    let mut stats = civichub_store::BatchStats::default();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let started = std::time::Instant::now();
        let outcome = commit(&db, &batch).await;
        stats.record("token writer", batch.len(), started.elapsed());
        match outcome {
            Ok(()) => {
                for job in batch {
                    let _ = job.done.send(Ok(()));
                }
            }
            // One bad job must not fail the others: write each on its own.
            Err(e) if batch.len() > 1 => {
                tracing::warn!("token batch of {} failed ({e}); writing one by one", batch.len());
                for job in batch {
                    let outcome = commit(&db, std::slice::from_ref(&job)).await.map_err(|e| e.to_string());
                    let _ = job.done.send(outcome);
                }
            }
            Err(e) => {
                for job in batch {
                    let _ = job.done.send(Err(e.to_string()));
                }
            }
        }
    }
}

async fn commit(db: &Db, batch: &[Job]) -> StoreResult<()> {
    let mut tx = db.begin().await?;
    insert_tokens(&mut tx, batch.iter().flat_map(|j| j.rows.tokens.iter())).await?;
    insert_codes(&mut tx, batch.iter().flat_map(|j| j.rows.codes.iter())).await?;
    insert_session_clients(&mut tx, batch.iter().flat_map(|j| j.rows.session_clients.iter())).await?;
    insert_audit(&mut tx, batch.iter().flat_map(|j| j.rows.audit.iter())).await?;
    tx.commit().await?;
    Ok(())
}

type Query = sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments>;

/// One multi-row `INSERT INTO {table} ({columns}) VALUES … {suffix}`; `bind`
/// binds one row's values in column order.
async fn insert_rows<R>(tx: &mut Tx, table: &str, columns: &[&str], suffix: &str, rows: &[&R], bind: impl Fn(Query, &R) -> Query) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES {} {suffix}",
        columns.join(", "),
        civichub_store::row_placeholders(rows.len(), columns.len())
    );
    let mut query: Query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for row in rows {
        query = bind(query, row);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

pub(crate) async fn insert_tokens<'a>(tx: &mut Tx, rows: impl Iterator<Item = &'a TokenRow>) -> StoreResult<()> {
    let columns = ["token_hash", "kind", "family", "client_id", "user_id", "sid", "scope", "grant_json", "issued_at", "expires_at"];
    insert_rows(tx, "tokens", &columns, "", &rows.collect::<Vec<_>>(), |q, r| {
        q.bind(r.token_hash.clone())
            .bind(r.kind)
            .bind(r.family.clone())
            .bind(r.client_id.clone())
            .bind(r.user_id.clone())
            .bind(r.sid.clone())
            .bind(r.scope.clone())
            .bind(r.grant_json.clone())
            .bind(r.issued_at)
            .bind(r.expires_at)
    })
    .await
}

async fn insert_codes<'a>(tx: &mut Tx, rows: impl Iterator<Item = &'a CodeRow>) -> StoreResult<()> {
    let columns = ["code_hash", "grant_json", "family", "expires_at"];
    insert_rows(tx, "auth_codes", &columns, "", &rows.collect::<Vec<_>>(), |q, r| {
        q.bind(r.code_hash.clone()).bind(r.grant_json.clone()).bind(r.family.clone()).bind(r.expires_at)
    })
    .await
}

async fn insert_session_clients<'a>(tx: &mut Tx, rows: impl Iterator<Item = &'a (String, String)>) -> StoreResult<()> {
    let suffix = "ON CONFLICT (sid, client_id) DO NOTHING";
    insert_rows(tx, "session_clients", &["sid", "client_id"], suffix, &rows.collect::<Vec<_>>(), |q, (sid, client)| {
        q.bind(sid.clone()).bind(client.clone())
    })
    .await
}

pub(crate) async fn insert_audit<'a>(tx: &mut Tx, rows: impl Iterator<Item = &'a AuditRow>) -> StoreResult<()> {
    let columns = ["at", "event", "user_id", "client_id", "ip", "detail"];
    insert_rows(tx, "audit_events", &columns, "", &rows.collect::<Vec<_>>(), |q, r| {
        q.bind(r.at).bind(r.event).bind(r.user_id.clone()).bind(r.client_id.clone()).bind(r.ip.clone()).bind(r.detail.clone())
    })
    .await
}
