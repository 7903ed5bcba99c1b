//! Multi-row inserts: many rows of one table in one statement, so a batch
//! of writes costs one round trip to the database per table, not per row.

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

/// `($1, $2, $3), ($4, $5, $6)` for two rows of three columns.
pub fn row_placeholders(rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 1..=columns {
            if c > 1 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(r * columns + c).to_string());
        }
        out.push(')');
    }
    out
}

/// Parameters per statement: under SQLite's limit (32,766) and PostgreSQL's (65,535).
const MAX_PARAMS: usize = 30_000;

/// Inserts `values` (row after row, `width` cells each) with
/// `{head} VALUES (…), (…) {suffix}`, as few statements as the engines'
/// parameter limits allow. `head` is `INSERT INTO table (col, …)`.
pub async fn insert_rows(conn: &mut AnyConnection, head: &str, suffix: &str, width: usize, values: &[Value]) -> Result<(), sqlx::Error> {
    if width == 0 || values.is_empty() {
        return Ok(());
    }
    debug_assert_eq!(values.len() % width, 0, "{head}: a row has {width} cells");
    for chunk in values.chunks((MAX_PARAMS / width) * width) {
        let sql = format!("{head} VALUES {} {suffix}", row_placeholders(chunk.len() / width, width));
        // Row counts vary from batch to batch: keep these out of the statement cache.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(false);
        for value in chunk {
            query = value.bind(query);
        }
        query.execute(&mut *conn).await?;
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
        for p in std::mem::take(&mut self.tables) {
            insert_rows(conn, p.head, p.suffix, p.width, &p.values).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_every_cell() {
        assert_eq!(row_placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(row_placeholders(1, 1), "($1)");
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
}
