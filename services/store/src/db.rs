use std::borrow::Cow;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Executor, SqlSafeStr};

use crate::rows::{Deferred, Value};
use crate::{Error, Result};

/// A write transaction on whichever engine the hub runs on. It derefs to the
/// connection, so queries run on `&mut *tx`.
///
/// On SQLite it runs on the process's one writer connection: SQLite admits
/// one writer at a time, and writers queueing for that connection cost
/// nothing, while writers queueing in SQLite's busy handler sleep in steps
/// of milliseconds. Readers have a pool of their own, so a write never waits
/// for a reader to give a connection back.
///
/// Rows given to [`Tx::insert_later`] are written at commit, with one
/// multi-row `INSERT` per statement shape: the transaction's own queries do
/// not see them before.
pub struct Tx {
    inner: sqlx::Transaction<'static, sqlx::Any>,
    deferred: Deferred,
}

impl Tx {
    /// Makes the transaction's changes (deferred rows included) durable and visible.
    pub async fn commit(mut self) -> std::result::Result<(), sqlx::Error> {
        self.flush().await?;
        self.inner.commit().await
    }

    /// Abandons the transaction's changes.
    pub async fn rollback(self) -> std::result::Result<(), sqlx::Error> {
        self.inner.rollback().await
    }

    /// Queues one row for `{head} VALUES (…) {suffix}` (for example
    /// `INSERT INTO t (a, b)` and `ON CONFLICT (a) DO NOTHING`); it is written
    /// together with every other row of the same statement at commit.
    pub fn insert_later(&mut self, head: &'static str, suffix: &'static str, row: Vec<Value>) {
        self.deferred.push(head, suffix, row);
    }

    /// Writes the deferred rows now.
    pub async fn flush(&mut self) -> std::result::Result<(), sqlx::Error> {
        let Tx { inner, deferred, .. } = self;
        deferred.flush(&mut *inner).await
    }

    /// Forgets the deferred rows.
    pub fn discard_deferred(&mut self) {
        self.deferred.clear();
    }
}

impl std::ops::Deref for Tx {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        &self.inner
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        &mut self.inner
    }
}

/// Which engine a [`Db`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The embedded default: one file under the data directory.
    Sqlite,
    /// A shared server, for several hub nodes.
    Postgres,
}

impl Backend {
    /// The engine behind a connection.
    pub fn of(conn: &sqlx::AnyConnection) -> Backend {
        if conn.backend_name() == "SQLite" { Backend::Sqlite } else { Backend::Postgres }
    }

    /// A row-lock clause such as `" FOR UPDATE"` (with its leading space)
    /// on PostgreSQL; nothing on SQLite, whose write transactions take turns
    /// and so already hold what they read.
    pub fn locking(self, clause: &'static str) -> &'static str {
        match self {
            Backend::Postgres => clause,
            Backend::Sqlite => "",
        }
    }
}

/// A database URL, parsed at the edge. Its `Debug` and `Display` hide any
/// password it carries.
#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    url: String,
    backend: Backend,
}

impl DbUrl {
    /// The SQLite database of the embedded default, inside `data_dir`.
    pub fn sqlite_in(data_dir: &Path) -> Self {
        DbUrl {
            url: format!("sqlite://{}?mode=rwc", data_dir.join("civichub.db").display()),
            backend: Backend::Sqlite,
        }
    }

    /// The engine this URL names.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL itself, password included: only for handing to the driver.
    pub fn expose(&self) -> &str {
        &self.url
    }
}

impl FromStr for DbUrl {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let backend = if s.starts_with("sqlite:") {
            Backend::Sqlite
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(Error::UnsupportedUrl(redact(s)));
        };
        let mut url = s.to_owned();
        if backend == Backend::Sqlite && !url.contains('?') && !url.contains(":memory:") {
            url.push_str("?mode=rwc");
        }
        Ok(DbUrl { url, backend })
    }
}

/// The URL with its credentials hidden: the user and password before `@`,
/// and a `password=` parameter (which PostgreSQL's URLs also take).
fn redact(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (url, None),
    };
    let mut out = match (head.find("://"), head.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &head[..scheme], &head[at..]),
        _ => head.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({})", redact(&self.url))
    }
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.url))
    }
}

/// The hub's database: a connection pool plus the engine it runs on.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// On SQLite, the one connection transactions run on; on PostgreSQL,
    /// the pool itself.
    writer: AnyPool,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db").field("backend", &self.backend).finish()
    }
}

impl Db {
    /// Connects and brings the schema up to date.
    ///
    /// Several nodes may call this at once against one PostgreSQL database:
    /// sqlx serialises the migrations with an advisory lock.
    pub async fn connect(url: &DbUrl) -> Result<Db> {
        install_default_drivers();
        if url.backend == Backend::Sqlite
            && let Some(dir) = sqlite_parent_dir(&url.url) {
                std::fs::create_dir_all(&dir)
                    .map_err(|source| Error::DataDir { path: dir.clone(), source })?;
            }
        let backend = url.backend;
        let pool = Self::pool_options(backend, if backend == Backend::Sqlite { 8 } else { 16 }).connect(&url.url).await?;
        // An in-memory SQLite database lives and dies with its connection:
        // a second pool would be another database.
        let writer = if backend == Backend::Sqlite && !url.url.contains(":memory:") {
            Self::pool_options(backend, 1).connect(&url.url).await?
        } else {
            pool.clone()
        };
        let db = Db { pool, backend, writer };
        db.migrate().await?;
        Ok(db)
    }

    /// A pool of up to `connections`.
    fn pool_options(backend: Backend, connections: u32) -> AnyPoolOptions {
        AnyPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(Duration::from_secs(10))
            // A file needs no liveness check; on SQLite it would cost every
            // acquire a round trip to the connection's thread.
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute("PRAGMA journal_mode=WAL").await?;
                        // A commit is on the disk before it is answered (WAL's
                        // NORMAL would lose the last ones to a power cut).
                        conn.execute("PRAGMA synchronous=FULL").await?;
                        conn.execute("PRAGMA busy_timeout=10000").await?;
                        conn.execute("PRAGMA foreign_keys=ON").await?;
                    }
                    Ok(())
                })
            })
    }

    /// The connection pool, for queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The engine behind this pool.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a write transaction. On SQLite it first takes this process's
    /// writer connection, then SQLite's lock (`BEGIN IMMEDIATE`), so two
    /// writers never deadlock on lock upgrade.
    pub async fn begin(&self) -> Result<Tx> {
        let inner = match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.writer.begin().await?,
        };
        Ok(Tx { inner, deferred: Deferred::default() })
    }

    async fn migrate(&self) -> Result<()> {
        let sources: &[(i64, &str, &str, &str)] = &[
            (
                1,
                "identity",
                include_str!("../migrations/sqlite/0001_identity.sql"),
                include_str!("../migrations/postgres/0001_identity.sql"),
            ),
            (
                2,
                "knowledge_base",
                include_str!("../migrations/sqlite/0002_knowledge_base.sql"),
                include_str!("../migrations/postgres/0002_knowledge_base.sql"),
            ),
            (
                3,
                "messaging",
                // The same SQL runs on both engines.
                include_str!("../migrations/common/0003_messaging.sql"),
                include_str!("../migrations/common/0003_messaging.sql"),
            ),
            (
                4,
                "hotline",
                include_str!("../migrations/common/0004_hotline.sql"),
                include_str!("../migrations/common/0004_hotline.sql"),
            ),
            (
                5,
                "hotline_co_departments",
                include_str!("../migrations/common/0005_hotline_co_departments.sql"),
                include_str!("../migrations/common/0005_hotline_co_departments.sql"),
            ),
            (
                6,
                "federation",
                include_str!("../migrations/common/0006_federation.sql"),
                include_str!("../migrations/common/0006_federation.sql"),
            ),
            (
                7,
                "directory",
                include_str!("../migrations/common/0007_directory.sql"),
                include_str!("../migrations/common/0007_directory.sql"),
            ),
            (
                8,
                "upstream_sessions",
                include_str!("../migrations/common/0008_upstream_sessions.sql"),
                include_str!("../migrations/common/0008_upstream_sessions.sql"),
            ),
            (
                9,
                "account",
                include_str!("../migrations/common/0009_account.sql"),
                include_str!("../migrations/common/0009_account.sql"),
            ),
            (
                10,
                "mfa",
                include_str!("../migrations/common/0010_mfa.sql"),
                include_str!("../migrations/common/0010_mfa.sql"),
            ),
            (
                11,
                "passkeys",
                include_str!("../migrations/common/0011_passkeys.sql"),
                include_str!("../migrations/common/0011_passkeys.sql"),
            ),
            (
                12,
                "disabled_by",
                include_str!("../migrations/common/0012_disabled_by.sql"),
                include_str!("../migrations/common/0012_disabled_by.sql"),
            ),
            (
                13,
                "users_department",
                include_str!("../migrations/common/0013_users_department.sql"),
                include_str!("../migrations/common/0013_users_department.sql"),
            ),
            (
                14,
                "messages_updated",
                include_str!("../migrations/common/0014_messages_updated.sql"),
                include_str!("../migrations/common/0014_messages_updated.sql"),
            ),
            (
                15,
                "login_bindings",
                include_str!("../migrations/common/0015_login_bindings.sql"),
                include_str!("../migrations/common/0015_login_bindings.sql"),
            ),
            (
                16,
                "audit_tx",
                include_str!("../migrations/sqlite/0016_audit_tx.sql"),
                include_str!("../migrations/postgres/0016_audit_tx.sql"),
            ),
            (
                17,
                "user_links_one_per_provider",
                include_str!("../migrations/common/0017_user_links_one_per_provider.sql"),
                include_str!("../migrations/common/0017_user_links_one_per_provider.sql"),
            ),
        ];
        let migrations = sources
            .iter()
            .map(|&(version, name, sqlite, postgres)| {
                let sql = match self.backend {
                    Backend::Sqlite => sqlite,
                    Backend::Postgres => postgres,
                };
                Migration::new(
                    version,
                    Cow::Borrowed(name),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations).run(&self.pool).await?;
        Ok(())
    }

    /// Closes every connection; pending work finishes first.
    pub async fn close(&self) {
        // On PostgreSQL (and in-memory SQLite) the writer is the pool itself.
        self.writer.close().await;
        self.pool.close().await;
    }
}

fn sqlite_parent_dir(url: &str) -> Option<String> {
    let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next()?;
    if path.is_empty() || path.contains(":memory:") {
        return None;
    }
    let parent = Path::new(path).parent()?.to_str()?.to_owned();
    (!parent.is_empty()).then_some(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_redacted() {
        let pg: DbUrl = "postgres://hub:s3cret@db.example/civichub".parse().unwrap();
        assert_eq!(pg.backend(), Backend::Postgres);
        assert_eq!(pg.to_string(), "postgres://***@db.example/civichub");
        assert!(!format!("{pg:?}").contains("s3cret"));
        let query: DbUrl = "postgres://hub@db.example/civichub?sslmode=require&password=s3cret".parse().unwrap();
        assert_eq!(query.to_string(), "postgres://***@db.example/civichub?sslmode=require&password=***");
        let lite: DbUrl = "sqlite:///tmp/x.db".parse().unwrap();
        assert_eq!(lite.expose(), "sqlite:///tmp/x.db?mode=rwc");
        assert!("mysql://x".parse::<DbUrl>().is_err());
    }

    #[tokio::test]
    async fn sqlite_commits_reach_the_disk_before_they_return() {
        use sqlx::Row;
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::connect(&DbUrl::sqlite_in(dir.path())).await.expect("db");
        let mut tx = db.begin().await.expect("begin");
        let journal: String = sqlx::query("PRAGMA journal_mode").fetch_one(&mut *tx).await.expect("journal").get(0);
        let synchronous: i64 = sqlx::query("PRAGMA synchronous").fetch_one(&mut *tx).await.expect("synchronous").get(0);
        assert_eq!((journal.as_str(), synchronous), ("wal", 2), "WAL with synchronous=FULL: every commit synced");
    }
}
