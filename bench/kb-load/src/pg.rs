//! PostgreSQL full-text search over the same corpus and queries.
//!
//! Debian's PostgreSQL has no Chinese parser (no zhparser), so the text is
//! segmented here, in the client, with the hub's own CJK bigram analyser
//! (`civichub_kb::analysis::BigramTokenizer`: folding, overlapping CJK
//! bigrams, other letters and digits as words), and stored space-separated;
//! the `simple` configuration then only splits on the spaces and lower-cases.
//! Queries are segmented the same way, inside the measured loop, and the
//! grams are joined with `|` (or `&` with `--mode and`).

use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use civichub_kb::analysis::BigramTokenizer;
use postgres::{Client, NoTls};
use serde::Deserialize;
use serde_json::json;
use tantivy::tokenizer::{TokenStream, Tokenizer};

use crate::stats::{self, Outcome};
use crate::{Opts, Res, Top, compare, read_queries};

/// The grams of `text`, in order (duplicates kept).
pub fn grams(text: &str) -> Vec<String> {
    let mut tokenizer = BigramTokenizer;
    let mut stream = tokenizer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        out.push(stream.token().text.clone());
    }
    out
}

/// The tsquery text for `q`: its distinct grams, quoted, joined by `op`.
pub fn tsquery(q: &str, op: &str) -> Res<String> {
    let mut seen: Vec<String> = Vec::new();
    for g in grams(q) {
        if !seen.contains(&g) {
            seen.push(g);
        }
    }
    if seen.is_empty() {
        return Err(format!("{q:?} has no searchable grams"));
    }
    // Grams are letters and digits only: nothing to escape inside the quotes.
    Ok(seen
        .iter()
        .map(|g| format!("'{g}'"))
        .collect::<Vec<_>>()
        .join(op))
}

const SCHEMA: &str = "
DROP TABLE IF EXISTS kb_bench;
CREATE TABLE kb_bench (
    id text PRIMARY KEY,
    title text NOT NULL,
    body text NOT NULL,
    category text,
    department text,
    tags text NOT NULL,
    title_seg text NOT NULL,
    tags_seg text NOT NULL,
    body_seg text NOT NULL,
    doc tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', title_seg), 'A') ||
        setweight(to_tsvector('simple', tags_seg), 'B') ||
        setweight(to_tsvector('simple', body_seg), 'D')
    ) STORED
);";

/// COPY text format: backslash, tab, newline and carriage return escaped.
fn copy_field(out: &mut Vec<u8>, value: Option<&str>) {
    let Some(v) = value else {
        out.extend_from_slice(b"\\N");
        return;
    };
    for c in v.chars() {
        match c {
            '\\' => out.extend_from_slice(b"\\\\"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

#[derive(Deserialize)]
struct CorpusEntry {
    id: String,
    title: String,
    body: String,
    category_name: Option<String>,
    department: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

fn connect(url: &str) -> Res<Client> {
    Client::connect(url, NoTls).map_err(|e| format!("PostgreSQL {url}: {e}"))
}

/// Creates `kb_bench`, copies the corpus in, builds the GIN index, analyses.
pub fn load(o: Opts) -> Res<()> {
    let url = o.req("pg")?;
    let corpus = o.req("corpus")?;
    let mut client = connect(&url)?;
    client.batch_execute(SCHEMA).map_err(|e| e.to_string())?;
    let text = std::fs::read_to_string(&corpus).map_err(|e| format!("{corpus}: {e}"))?;

    let t = Instant::now();
    let mut rows = 0u64;
    let mut buf = Vec::with_capacity(8 << 20);
    let mut writer = client
        .copy_in("COPY kb_bench (id, title, body, category, department, tags, title_seg, tags_seg, body_seg) FROM STDIN")
        .map_err(|e| e.to_string())?;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let e: CorpusEntry = serde_json::from_str(line).map_err(|e| format!("{corpus}: {e}"))?;
        let tags = e.tags.join(" ");
        let fields = [
            Some(e.id.as_str()),
            Some(e.title.as_str()),
            Some(e.body.as_str()),
            e.category_name.as_deref(),
            e.department.as_deref(),
            Some(tags.as_str()),
            Some(&grams(&e.title).join(" ")),
            Some(&grams(&tags).join(" ")),
            Some(&grams(&e.body).join(" ")),
        ];
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                buf.push(b'\t');
            }
            copy_field(&mut buf, *f);
        }
        buf.push(b'\n');
        rows += 1;
        if buf.len() > 4 << 20 {
            writer.write_all(&buf).map_err(|e| e.to_string())?;
            buf.clear();
        }
    }
    writer.write_all(&buf).map_err(|e| e.to_string())?;
    writer.finish().map_err(|e| e.to_string())?;
    let copy_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    client
        .batch_execute("CREATE INDEX kb_bench_doc ON kb_bench USING gin (doc)")
        .map_err(|e| e.to_string())?;
    let gin_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    client
        .batch_execute("VACUUM ANALYZE kb_bench")
        .map_err(|e| e.to_string())?;
    let analyze_s = t.elapsed().as_secs_f64();
    let sizes = client
        .query_one(
            "SELECT pg_total_relation_size('kb_bench'), pg_relation_size('kb_bench_doc')",
            &[],
        )
        .map_err(|e| e.to_string())?;
    let (total_bytes, gin_bytes): (i64, i64) = (sizes.get(0), sizes.get(1));
    println!(
        "PostgreSQL load: {rows} entries; segment + COPY {copy_s:.1} s ({:.0} entries/s), GIN index {gin_s:.1} s, VACUUM ANALYZE {analyze_s:.1} s; table+indexes {:.0} MB (GIN {:.0} MB)",
        rows as f64 / copy_s,
        total_bytes as f64 / 1048576.0,
        gin_bytes as f64 / 1048576.0
    );
    o.write_json(&json!({
        "entries": rows, "copy_s": copy_s, "gin_s": gin_s, "analyze_s": analyze_s,
        "total_bytes": total_bytes, "gin_bytes": gin_bytes,
    }))
}

const SEARCH: &str = "SELECT id, title FROM kb_bench, to_tsquery('simple', $1) AS q \
                      WHERE doc @@ q ORDER BY ts_rank(doc, q) DESC LIMIT 10";

/// Closed-loop searches, one connection per worker thread.
pub fn run(o: Opts) -> Res<()> {
    let url = o.req("pg")?;
    let queries = read_queries(&o.req("queries")?)?;
    let mut settings = o.settings()?;
    let mode = o.0.get("mode").map_or("or", String::as_str).to_owned();
    let op = match mode.as_str() {
        "or" => " | ",
        "and" => " & ",
        m => return Err(format!("--mode {m}: use or or and")),
    };
    let mut clients = Vec::new();
    for _ in 0..settings.concurrency.max(1) {
        let mut c = connect(&url)?;
        // JIT compilation would charge PostgreSQL tens of milliseconds on
        // the costlier plans; leave it out.
        c.batch_execute("SET jit = off")
            .map_err(|e| e.to_string())?;
        let pid: i32 = c
            .query_one("SELECT pg_backend_pid()", &[])
            .map_err(|e| e.to_string())?
            .get(0);
        settings.pids.push(pid as u32);
        let stmt = c.prepare(SEARCH).map_err(|e| e.to_string())?;
        clients.push(Some((c, stmt)));
    }
    let search = |(c, stmt): &mut (Client, postgres::Statement), q: &str| -> Res<Outcome> {
        let tsq = tsquery(q, op)?;
        let rows = c.query(stmt, &[&tsq]).map_err(|e| e.to_string())?;
        Ok(Outcome {
            total: None,
            top: Top {
                ids: rows.iter().map(|r| r.get::<_, String>(0)).collect(),
                scores: Vec::new(),
            },
        })
    };
    let mut results = Vec::new();
    {
        let first = clients[0].as_mut().ok_or("no connection")?;
        for q in &queries {
            let outcome = search(first, q).map_err(|e| format!("query {q:?}: {e}"))?;
            results.push((q.clone(), outcome.top));
        }
    }
    let agreement = compare(&o, &results)?;
    let slots = Mutex::new(clients);
    let label =
        o.0.get("label")
            .cloned()
            .unwrap_or_else(|| format!("PostgreSQL FTS ({mode})"));
    let measured = stats::drive_threads(
        &settings,
        &queries,
        |i| {
            slots.lock().map_err(|_| "poisoned".to_owned())?[i]
                .take()
                .ok_or_else(|| "no connection".to_owned())
        },
        search,
    );
    let mut summary = stats::summary(&label, &settings, queries.len(), measured);
    summary["system"] = json!("pg");
    summary["mode"] = json!(mode);
    summary["agreement_with_http"] = agreement.unwrap_or(serde_json::Value::Null);
    stats::print_line(&summary);
    if let Some(a) = summary.get("agreement_with_http").filter(|a| !a.is_null()) {
        println!(
            "  same top-10 ids as the HTTP endpoint for {} of {} queries; mean overlap {:.0} %",
            a["same_top_ids"],
            a["queries"],
            a["mean_overlap"].as_f64().unwrap_or(0.0) * 100.0
        );
    }
    o.write_json(&summary)
}
