//! Storage for CivicHub.
//!
//! One schema runs on two engines: SQLite for the embedded default and
//! PostgreSQL for several hub nodes sharing one database. Queries go through
//! sqlx's `Any` driver with `$N` placeholders, which both engines accept, and
//! column types both engines map alike (`TEXT`, `BIGINT`), so every query in
//! the project is written once.

mod db;
mod error;
mod group;
mod outbox;
mod rows;
mod tokens;

pub use db::{Backend, Db, DbUrl, Tx};
pub use error::{Error, Result};
pub use group::{GroupWriter, TxFuture};
pub use outbox::{Outbox, OutboxMessage, backoff_secs};
pub use rows::{AnyQuery, Value, row_placeholders};
pub use tokens::{now, ordered_id, ordered_secret, random_hex, random_token, secret_key, sha256_hex};
pub use sqlx::Row;
