//! Multi-row inserts: many rows of one table in one statement, so a batch
//! of writes costs one round trip to the database (on SQLite) or one per
//! table (on PostgreSQL), not one per row.

use sqlx::AnyConnection;

/// One cell of a row to insert: text or integer, either possibly NULL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `TEXT`.
    Text(Option<String>),
    /// `BIGINT`.
    Int(Option<i64>),
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(Some(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(Some(v.to_owned()))
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(Some(v.clone()))
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        Value::Text(v)
    }
}

impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Self {
        Value::Text(v.map(str::to_owned))
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(Some(v))
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        Value::Int(v)
    }
}

/// A query of the `Any` driver, as `sqlx::query` makes it.
pub type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

impl Value {
    /// Binds this value as the query's next parameter.
    pub fn bind<'q>(&self, query: AnyQuery<'q>) -> AnyQuery<'q> {
        match self {
            Value::Text(v) => query.bind(v.clone()),
            Value::Int(v) => query.bind(*v),
        }
    }
}

/// `($1, $2, $3), ($4, $5, $6)` for two rows of three columns on
/// PostgreSQL, numbered from `$first`; `(?, ?, ?), (?, ?, ?)` on SQLite.
///
/// SQLite looks a numbered parameter up by a linear search, once when it
/// parses the statement and once more when the driver binds it, so a
/// statement of n `$N`s costs n² steps (most of a large batch's time); plain
/// `?`s are numbered as they come. They bind in order, counting across the
/// statements of one query, so a statement that uses them must use no `$N`.
pub fn row_placeholders(backend: crate::Backend, first: usize, rows: usize, columns: usize) -> String {
    let numbered = backend == crate::Backend::Postgres;
    let mut out = String::with_capacity(rows * columns * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..columns {
            if c > 0 {
                out.push_str(", ");
            }
            if numbered {
                out.push('$');
                out.push_str(&(first + r * columns + c).to_string());
            } else {
                out.push('?');
            }
        }
        out.push(')');
    }
    out
}

/// Parameters per query: under SQLite's limit (32,766, which is also the
/// highest `$N` it takes) and PostgreSQL's (65,535).
const MAX_PARAMS: usize = 30_000;

/// Runs `sql` with `values` bound in order.
async fn run(conn: &mut AnyConnection, sql: String, values: &[&Value]) -> Result<(), sqlx::Error> {
    // Row counts vary from batch to batch: keep these out of the statement cache.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
    for value in values {
        query = value.bind(query);
    }
    query.execute(conn).await?;
    Ok(())
}

/// Inserts every table's rows with `{head} VALUES (…), (…) {suffix}`, in as
/// few round trips as the engines allow: on SQLite every statement goes in
/// one query (its driver runs them one after another, numbering `$N` across
/// them), on PostgreSQL one query per statement; a table whose rows exceed
/// the parameter limit takes several statements.
async fn insert_all(conn: &mut AnyConnection, tables: &[Pending]) -> Result<(), sqlx::Error> {
    let backend = crate::Backend::of(conn);
    let together = backend == crate::Backend::Sqlite;
    let mut sql = String::new();
    let mut values: Vec<&Value> = Vec::new();
    for p in tables.iter().filter(|p| p.width > 0) {
        debug_assert_eq!(p.values.len() % p.width, 0, "{}: a row has {} cells", p.head, p.width);
        for chunk in p.values.chunks((MAX_PARAMS / p.width).max(1) * p.width) {
            if !values.is_empty() && (!together || values.len() + chunk.len() > MAX_PARAMS) {
                run(conn, std::mem::take(&mut sql), &values).await?;
                values.clear();
            }
            if !sql.is_empty() {
                sql.push_str(";\n");
            }
            let rows = row_placeholders(backend, values.len() + 1, chunk.len() / p.width, p.width);
            sql.push_str(&format!("{} VALUES {rows} {}", p.head, p.suffix));
            values.extend(chunk);
        }
    }
    if !values.is_empty() {
        run(conn, sql, &values).await?;
    }
    Ok(())
}

/// Rows for one `INSERT` head, waiting for the transaction's commit.
#[derive(Debug)]
pub(crate) struct Pending {
    head: &'static str,
    suffix: &'static str,
    width: usize,
    values: Vec<Value>,
}

/// Inserts a transaction defers to its commit, grouped by statement.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    tables: Vec<Pending>,
}

impl Deferred {
    pub(crate) fn push(&mut self, head: &'static str, suffix: &'static str, row: Vec<Value>) {
        let width = row.len();
        match self.tables.iter_mut().find(|p| p.head == head && p.suffix == suffix && p.width == width) {
            Some(p) => p.values.extend(row),
            None => self.tables.push(Pending { head, suffix, width, values: row }),
        }
    }

    pub(crate) fn clear(&mut self) {
        self.tables.clear();
    }

    /// Writes everything deferred, in the order the tables were first used.
    pub(crate) async fn flush(&mut self, conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
        insert_all(conn, &std::mem::take(&mut self.tables)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_every_cell() {
        use crate::Backend::{Postgres, Sqlite};
        assert_eq!(row_placeholders(Postgres, 1, 2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(row_placeholders(Postgres, 1, 1, 1), "($1)");
        assert_eq!(row_placeholders(Postgres, 7, 1, 2), "($7, $8)");
        assert_eq!(row_placeholders(Sqlite, 7, 2, 2), "(?, ?), (?, ?)");
    }

    #[test]
    fn deferred_rows_group_by_statement() {
        let mut d = Deferred::default();
        d.push("INSERT INTO a (x)", "", vec![1.into()]);
        d.push("INSERT INTO b (x, y)", "", vec!["p".into(), Value::Int(None)]);
        d.push("INSERT INTO a (x)", "", vec![2.into()]);
        assert_eq!(d.tables.len(), 2);
        assert_eq!(d.tables[0].values, vec![Value::Int(Some(1)), Value::Int(Some(2))]);
    }

    #[tokio::test]
    async fn deferred_rows_of_several_tables_past_the_parameter_limit_all_land() {
        use crate::{Db, DbUrl, Row};
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::connect(&DbUrl::sqlite_in(dir.path())).await.expect("db");
        let mut tx = db.begin().await.expect("begin");
        // 16,000 cursors of two cells (32,000 parameters: more than one
        // query takes), then audit rows of six, then cursors again.
        for i in 0..16_000i64 {
            tx.insert_later("INSERT INTO bus_cursors (name, position)", "", vec![format!("c{i}").into(), i.into()]);
        }
        for i in 0..50i64 {
            let row = vec![i.into(), "test.event".into(), Value::Text(None), Value::Text(None), Value::Text(None), format!("{{\"n\":{i}}}").into()];
            tx.insert_later("INSERT INTO audit_events (at, event, user_id, client_id, ip, detail)", "", row);
        }
        tx.insert_later("INSERT INTO bus_cursors (name, position)", "", vec!["last".into(), (-1).into()]);
        tx.commit().await.expect("commit");
        let cursors: Vec<(String, i64)> = sqlx::query("SELECT name, position FROM bus_cursors ORDER BY position")
            .fetch_all(db.pool())
            .await
            .expect("cursors")
            .iter()
            .map(|r| (r.get("name"), r.get("position")))
            .collect();
        assert_eq!(cursors.len(), 16_001);
        assert_eq!(cursors[0], ("last".to_owned(), -1));
        assert!(cursors[1..].iter().enumerate().all(|(i, (name, position))| *name == format!("c{i}") && *position == i as i64));
        let audit: Vec<(i64, String)> = sqlx::query("SELECT at, detail FROM audit_events ORDER BY id")
            .fetch_all(db.pool())
            .await
            .expect("audit")
            .iter()
            .map(|r| (r.get("at"), r.get("detail")))
            .collect();
        assert_eq!(audit.len(), 50);
        assert!(audit.iter().enumerate().all(|(i, (at, detail))| *at == i as i64 && *detail == format!("{{\"n\":{i}}}")));
    }
}
