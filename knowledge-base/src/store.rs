//! Entries in the hub's database: the source of truth. Every change bumps
//! the entry's version, keeps a snapshot, and appends to `kb_changes`, the
//! stream every node's index follows.

use civichub_store::{Db, Row, Tx, now, random_token};
use serde::Serialize;
use serde_json::json;

use crate::entry::{Audience, Entry, Status, ValidEntry};
use crate::{Error, Result};

/// One version of an entry: who changed what, when.
#[derive(Clone, Debug, Serialize)]
pub struct Version {
    /// Version number, from 1.
    pub version: i64,
    /// When (Unix seconds).
    pub at: i64,
    /// Who.
    pub actor: Option<String>,
    /// `create`, `update`, `publish`, `expire` or `import`.
    pub action: String,
    /// The entry as it was after the change.
    pub snapshot: serde_json::Value,
}

/// The change-stream entry id that asks for a full rebuild.
pub const REBUILD: &str = "*";

/// The entry table.
#[derive(Clone, Debug)]
pub struct EntryStore {
    db: Db,
}

const COLUMNS: &str = "id, title, body, category_code, category_name, department, tags, audience, status, \
                       effective_from, effective_until, source_url, version, updated_at, updated_by";

fn from_row(row: &sqlx::any::AnyRow) -> Result<Entry> {
    let tags: String = row.try_get("tags")?;
    Ok(Entry {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        body: row.try_get("body")?,
        category_code: row.try_get("category_code")?,
        category_name: row.try_get("category_name")?,
        department: row.try_get("department")?,
        tags: tags.split('\n').filter(|t| !t.is_empty()).map(str::to_owned).collect(),
        audience: Audience::parse(&row.try_get::<String, _>("audience")?)?,
        status: Status::parse(&row.try_get::<String, _>("status")?)?,
        effective_from: row.try_get("effective_from")?,
        effective_until: row.try_get("effective_until")?,
        source_url: row.try_get("source_url")?,
        version: row.try_get("version")?,
        updated_at: row.try_get("updated_at")?,
        updated_by: row.try_get("updated_by")?,
    })
}

impl EntryStore {
    /// The entries in `db`.
    pub fn new(db: Db) -> Self {
        EntryStore { db }
    }

    /// An entry by id.
    pub async fn get(&self, id: &str) -> Result<Option<Entry>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM kb_entries WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Entries by id, in any order; missing ids are left out.
    pub async fn get_many(&self, ids: &[String]) -> Result<Vec<Entry>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(200) {
            let sql = format!("SELECT {COLUMNS} FROM kb_entries WHERE id IN {}", civichub_store::row_placeholders(self.db.backend(), 1, 1, chunk.len()));
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(self.db.pool()).await? {
                out.push(from_row(&row)?);
            }
        }
        Ok(out)
    }

    /// Every published entry, for rebuilding an index.
    pub async fn published(&self) -> Result<Vec<Entry>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM kb_entries WHERE status = 'published' ORDER BY id"
        )))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Creates an entry; its id is the given one or a new one.
    pub async fn create(&self, entry: ValidEntry, actor: Option<&str>) -> Result<Entry> {
        let mut tx = self.db.begin().await?;
        let created = create_in(&mut tx, entry, actor, "create").await?;
        tx.commit().await?;
        Ok(created)
    }

    /// Replaces an entry's fields (its id stays).
    pub async fn update(&self, id: &str, entry: ValidEntry, actor: Option<&str>) -> Result<Entry> {
        let mut tx = self.db.begin().await?;
        let updated = update_in(&mut tx, id, entry, actor, "update").await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Creates or replaces, by id (imports).
    pub async fn upsert(&self, entry: ValidEntry, actor: Option<&str>) -> Result<Entry> {
        let mut tx = self.db.begin().await?;
        let exists = match &entry.id {
            Some(id) => sqlx::query("SELECT 1 AS one FROM kb_entries WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?.is_some(),
            None => false,
        };
        let stored = match (exists, entry.id.clone()) {
            (true, Some(id)) => update_in(&mut tx, &id, entry, actor, "import").await?,
            _ => create_in(&mut tx, entry, actor, "import").await?,
        };
        tx.commit().await?;
        Ok(stored)
    }

    /// Moves an entry to `status` (publish, expire).
    pub async fn set_status(&self, id: &str, status: Status, actor: Option<&str>) -> Result<Entry> {
        let mut tx = self.db.begin().await?;
        let current = get_in(&mut tx, id).await?.ok_or_else(|| Error::NotFound(id.to_owned()))?;
        let action = match status {
            Status::Published => "publish",
            Status::Expired => "expire",
            Status::Draft => "unpublish",
        };
        let entry = ValidEntry {
            id: Some(current.id.clone()),
            title: current.title,
            body: current.body,
            category_code: current.category_code,
            category_name: current.category_name,
            department: current.department,
            tags: current.tags,
            audience: current.audience,
            status,
            effective_from: current.effective_from,
            effective_until: current.effective_until,
            source_url: current.source_url,
        };
        let updated = update_in(&mut tx, id, entry, actor, action).await?;
        tx.commit().await?;
        Ok(updated)
    }

    /// Every version of an entry, oldest first.
    pub async fn versions(&self, id: &str) -> Result<Vec<Version>> {
        let rows = sqlx::query("SELECT version, at, actor, action, snapshot FROM kb_versions WHERE entry_id = $1 ORDER BY version")
            .bind(id)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Version {
                    version: r.try_get("version")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    snapshot: serde_json::from_str(&r.try_get::<String, _>("snapshot")?)?,
                })
            })
            .collect()
    }

    /// Changes after `seq`, oldest first: `(seq, entry id)`.
    pub async fn changes_after(&self, seq: i64, limit: i64) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query("SELECT seq, entry_id FROM kb_changes WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(seq)
            .bind(limit)
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|r| Ok((r.try_get("seq")?, r.try_get("entry_id")?))).collect()
    }

    /// The change numbers in `(after, up_to]`.
    pub async fn change_numbers_in(&self, after: i64, up_to: i64) -> Result<Vec<i64>> {
        let rows = sqlx::query("SELECT seq FROM kb_changes WHERE seq > $1 AND seq <= $2").bind(after).bind(up_to).fetch_all(self.db.pool()).await?;
        rows.iter().map(|r| Ok(r.try_get("seq")?)).collect()
    }

    /// The changes numbered `seqs` that exist, in any order: `(seq, entry id)`.
    pub async fn changes_numbered(&self, seqs: &[i64]) -> Result<Vec<(i64, String)>> {
        let mut out = Vec::new();
        for chunk in seqs.chunks(200) {
            let sql = format!("SELECT seq, entry_id FROM kb_changes WHERE seq IN {}", civichub_store::row_placeholders(self.db.backend(), 1, 1, chunk.len()));
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for seq in chunk {
                query = query.bind(*seq);
            }
            for r in query.fetch_all(self.db.pool()).await? {
                out.push((r.try_get("seq")?, r.try_get("entry_id")?));
            }
        }
        Ok(out)
    }

    /// Asks every node to rebuild its index from the entry table: a change
    /// naming [`REBUILD`] instead of an entry.
    pub async fn request_rebuild(&self) -> Result<()> {
        let mut tx = self.db.begin().await?;
        sqlx::query("INSERT INTO kb_changes (entry_id, at) VALUES ($1, $2)").bind(REBUILD).bind(now()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The newest change number (0 when none).
    pub async fn last_change(&self) -> Result<i64> {
        let row = sqlx::query("SELECT MAX(seq) AS m FROM kb_changes").fetch_one(self.db.pool()).await?;
        Ok(row.try_get::<Option<i64>, _>("m")?.unwrap_or(0))
    }

    /// How many entries there are.
    pub async fn count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM kb_entries").fetch_one(self.db.pool()).await?;
        Ok(row.try_get("n")?)
    }
}

/// An entry read in a write transaction, locked on PostgreSQL until it ends,
/// so what the transaction writes back from it (a publish writes every
/// field) cannot undo an edit committed in between. (On SQLite writers take
/// turns.)
async fn get_in(tx: &mut Tx, id: &str) -> Result<Option<Entry>> {
    let lock = civichub_store::Backend::of(tx).locking(" FOR UPDATE");
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM kb_entries WHERE id = $1{lock}")))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(from_row).transpose()
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds an entry's fields, `title` to `source_url`, in column order.
fn bind_fields<'q>(query: AnyQuery<'q>, entry: &'q ValidEntry) -> AnyQuery<'q> {
    query
        .bind(&entry.title)
        .bind(&entry.body)
        .bind(&entry.category_code)
        .bind(&entry.category_name)
        .bind(&entry.department)
        .bind(entry.tags.join("\n"))
        .bind(entry.audience.as_str())
        .bind(entry.status.as_str())
        .bind(entry.effective_from)
        .bind(entry.effective_until)
        .bind(&entry.source_url)
}

async fn create_in(tx: &mut Tx, entry: ValidEntry, actor: Option<&str>, action: &str) -> Result<Entry> {
    let id = entry.id.clone().unwrap_or_else(|| format!("kb-{}", random_token(9)));
    if get_in(tx, &id).await?.is_some() {
        return Err(Error::Conflict(id));
    }
    let now = now();
    bind_fields(
        sqlx::query(
            "INSERT INTO kb_entries (id, title, body, category_code, category_name, department, tags, audience, status, \
             effective_from, effective_until, source_url, version, created_at, updated_at, updated_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1, $13, $14, $15)",
        )
        .bind(&id),
        &entry,
    )
    .bind(now)
    .bind(now)
    .bind(actor)
    .execute(&mut **tx)
    .await?;
    record(tx, &id, actor, action).await
}

async fn update_in(tx: &mut Tx, id: &str, entry: ValidEntry, actor: Option<&str>, action: &str) -> Result<Entry> {
    let changed = bind_fields(
        sqlx::query(
            "UPDATE kb_entries SET title = $1, body = $2, category_code = $3, category_name = $4, department = $5, \
             tags = $6, audience = $7, status = $8, effective_from = $9, effective_until = $10, source_url = $11, \
             version = version + 1, updated_at = $12, updated_by = $13 WHERE id = $14",
        ),
        &entry,
    )
    .bind(now())
    .bind(actor)
    .bind(id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(Error::NotFound(id.to_owned()));
    }
    record(tx, id, actor, action).await
}

/// Keeps the new version and announces the change, in the same transaction.
async fn record(tx: &mut Tx, id: &str, actor: Option<&str>, action: &str) -> Result<Entry> {
    let entry = get_in(tx, id).await?.ok_or_else(|| Error::NotFound(id.to_owned()))?;
    let now = now();
    sqlx::query("INSERT INTO kb_versions (entry_id, version, at, actor, action, snapshot) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id)
        .bind(entry.version)
        .bind(now)
        .bind(actor)
        .bind(action)
        .bind(json!(entry).to_string())
        .execute(&mut **tx)
        .await?;
    sqlx::query("INSERT INTO kb_changes (entry_id, at) VALUES ($1, $2)")
        .bind(id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(entry)
}
