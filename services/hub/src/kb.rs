//! `civichub kb …`: knowledge-base administration.

use std::path::PathBuf;

use anyhow::{Context, Result};
use civichub_kb::import::{self, Format};
use civichub_kb::{EntryStore, KbIndex};
use civichub_store::Db;
use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum KbCommand {
    /// Load entries from a JSON Lines or CSV file (by extension); good records
    /// load, bad ones are reported with their line.
    Import {
        /// The file (`.jsonl` or `.csv`).
        file: PathBuf,
    },
    /// Rebuild the search index from the database, on every hub node.
    Reindex,
}

pub async fn run(config: &Config, cmd: KbCommand) -> Result<()> {
    let db = Db::connect(&config.database).await.with_context(|| format!("cannot open database {}", config.database))?;
    let entries = EntryStore::new(db.clone());
    match cmd {
        KbCommand::Import { file } => {
            let input = std::fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
            let records = import::read(input, Format::for_path(&file))?;
            let bar = indicatif::ProgressBar::new(records.len() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} entries {elapsed}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let summary = import::load(&entries, records, Some("import"), |n| bar.set_position(n as u64)).await?;
            bar.finish_and_clear();
            for e in &summary.errors {
                eprintln!("{}:{}: {}", file.display(), e.line, e.message);
            }
            println!("read {} records: {} loaded, {} refused", summary.read, summary.loaded, summary.errors.len());
            if summary.loaded == 0 && !summary.errors.is_empty() {
                anyhow::bail!("nothing was imported");
            }
        }
        KbCommand::Reindex => {
            entries.request_rebuild().await?;
            // Rebuild here too when no hub on this data directory holds the index.
            match KbIndex::open(Some(&config.data_dir.join("kb-index")), civichub_kb::analysis::Synonyms::builtin()) {
                Ok(index) => {
                    // The change number first: a change after it is applied again
                    // by the follower, never recorded as applied while missing.
                    let last_change = entries.last_change().await?;
                    let published = entries.published().await?;
                    index.rebuild(&published, last_change)?;
                    println!("index rebuilt: {} published entries", published.len());
                }
                Err(e) if e.is_index_locked() => println!("a running hub holds this node's index; it rebuilds it now"),
                Err(e) => return Err(e).context("cannot open this node's search index"),
            }
            println!("every hub node rebuilds its index from the database");
        }
    }
    Ok(())
}
