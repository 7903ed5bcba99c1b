//! Relevance evaluation: how well the knowledge base answers the questions
//! citizens actually ask.
//!
//! Indexes every entry in `knowledge-base/data/*.jsonl` in memory, runs every
//! query in `knowledge-base/eval/*.jsonl` (`{"query", "relevant": [ids]}`) as
//! the public search would, and prints nDCG@10 and Recall@5 (binary
//! relevance), plus the queries that found nothing relevant in the top 10.
//!
//! `just kb-eval` runs it; `cargo run --release -p civichub-kb --example relevance_evaluation`.

use std::path::Path;

use civichub_kb::analysis::Synonyms;
use civichub_kb::import::{self, Format};
use civichub_kb::{KbIndex, SearchRequest, Status, Visibility};

#[derive(serde::Deserialize)]
struct Judged {
    query: String,
    relevant: Vec<String>,
}

fn jsonl_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "jsonl")).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let now = civichub_store::now();
    let mut entries = Vec::new();
    for file in jsonl_files(&root.join("data")) {
        for (i, record) in import::read(std::fs::File::open(&file)?, Format::JsonLines)?.into_iter().enumerate() {
            let (_, input) = record.map_err(|e| format!("{}:{}: {}", file.display(), e.line, e.message))?;
            let valid = input.validate(Status::Published).map_err(|e| format!("{}:{}: {e}", file.display(), i + 1))?;
            entries.push(valid.into_entry(format!("{}-{i}", file.display()), now));
        }
    }
    let index = KbIndex::open(None, Synonyms::builtin())?;
    index.rebuild(&entries, 1)?;

    let mut queries = Vec::new();
    for file in jsonl_files(&root.join("eval")) {
        for line in std::fs::read_to_string(&file)?.lines().filter(|l| !l.trim().is_empty()) {
            queries.push(serde_json::from_str::<Judged>(line)?);
        }
    }
    if queries.is_empty() {
        return Err("no queries in knowledge-base/eval/".into());
    }
    let (mut ndcg_sum, mut recall_sum) = (0.0, 0.0);
    let mut misses = Vec::new();
    for judged in &queries {
        let request = SearchRequest { q: judged.query.clone(), category: None, department: None, page: 1, size: 10 };
        let ids: Vec<String> = match index.search(&request, Visibility::Public, now) {
            Ok(r) => r.hits.into_iter().map(|h| h.id).collect(),
            Err(_) => Vec::new(),
        };
        let dcg: f64 = ids
            .iter()
            .enumerate()
            .filter(|(_, id)| judged.relevant.contains(id))
            .map(|(rank, _)| 1.0 / ((rank + 2) as f64).log2())
            .sum();
        let ideal: f64 = (0..judged.relevant.len().min(10)).map(|rank| 1.0 / ((rank + 2) as f64).log2()).sum();
        ndcg_sum += if ideal > 0.0 { dcg / ideal } else { 0.0 };
        let found = judged.relevant.iter().filter(|id| ids.iter().take(5).any(|x| x == *id)).count();
        recall_sum += found as f64 / judged.relevant.len().max(1) as f64;
        if dcg == 0.0 {
            misses.push(judged.query.clone());
        }
    }
    let n = queries.len() as f64;
    println!("entries: {}  queries: {}", entries.len(), queries.len());
    println!("nDCG@10:  {:.3}  (target >= 0.80)", ndcg_sum / n);
    println!("Recall@5: {:.3}", recall_sum / n);
    if !misses.is_empty() {
        println!("nothing relevant in the top 10 for {} queries:", misses.len());
        for q in misses {
            println!("  {q}");
        }
    }
    Ok(())
}
