//! Group commit for token issue: concurrent requests' token and audit rows
//! are written together, in one transaction with one multi-row INSERT per
//! table, and each request is answered once its rows are durable.
//!
//! On SQLite every write transaction runs alone; batching turns N
//! transactions of four statements each into one of four. The batching is
//! the store's [`GroupWriter`]; the rows are deferred onto its transaction
//! ([`Tx::insert_later`]), which writes each table's rows in one statement.

use civichub_store::{Db, GroupWriter, Tx, TxFuture};

use crate::Result;

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

impl Rows {
    /// Queues every row on `tx`: they are written at its commit, one
    /// statement per table for all the rows deferred on it.
    pub fn defer(&self, tx: &mut Tx) {
        for t in &self.tokens {
            tx.insert_later(
                "INSERT INTO tokens (token_hash, kind, family, client_id, user_id, sid, scope, grant_json, issued_at, expires_at)",
                "",
                vec![
                    t.token_hash.as_str().into(),
                    t.kind.into(),
                    t.family.as_str().into(),
                    t.client_id.as_str().into(),
                    t.user_id.clone().into(),
                    t.sid.clone().into(),
                    t.scope.as_str().into(),
                    t.grant_json.as_str().into(),
                    t.issued_at.into(),
                    t.expires_at.into(),
                ],
            );
        }
        for c in &self.codes {
            tx.insert_later(
                "INSERT INTO auth_codes (code_hash, grant_json, family, expires_at)",
                "",
                vec![c.code_hash.as_str().into(), c.grant_json.as_str().into(), c.family.as_str().into(), c.expires_at.into()],
            );
        }
        for (sid, client) in &self.session_clients {
            tx.insert_later("INSERT INTO session_clients (sid, client_id)", "ON CONFLICT (sid, client_id) DO NOTHING", vec![sid.into(), client.into()]);
        }
        for a in &self.audit {
            tx.insert_later(
                "INSERT INTO audit_events (at, event, user_id, client_id, ip, detail)",
                "",
                vec![a.at.into(), a.event.into(), a.user_id.clone().into(), a.client_id.clone().into(), a.ip.clone().into(), a.detail.as_str().into()],
            );
        }
    }
}

/// Hands rows to the group writer.
#[derive(Clone, Debug)]
pub struct TokenWriter {
    group: GroupWriter,
}

/// The most requests one transaction takes.
const BATCH: usize = 64;

impl TokenWriter {
    /// Starts the writer task on `db`.
    pub fn start(db: Db) -> TokenWriter {
        TokenWriter { group: GroupWriter::start(db, BATCH, "token writer") }
    }

    /// Writes `rows`; returns once they are committed.
    pub async fn write(&self, rows: Rows) -> Result<()> {
        self.transact(move |tx| {
            Box::pin(async move {
                rows.defer(tx);
                Ok(())
            })
        })
        .await
    }

    /// Runs `work` in the next group transaction and returns its result once
    /// that has committed (see [`GroupWriter::write`]: `work` may run twice,
    /// and rows deferred by the batch's earlier writes are visible to it only
    /// after [`Tx::flush`]).
    pub async fn transact<T, F>(&self, work: F) -> Result<T>
    where
        F: for<'a> FnOnce(&'a mut Tx) -> TxFuture<'a, Result<T>> + Clone + Send + 'static,
        T: Send + 'static,
    {
        self.group.write(work).await
    }
}
