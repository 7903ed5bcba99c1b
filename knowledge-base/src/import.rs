//! Imports from JSON Lines and CSV: every good record loads; every bad one
//! is reported with its line number.

use std::io::BufRead;

use serde::Serialize;

use crate::entry::{EntryInput, Status};
use crate::{EntryStore, Error, Result};

/// The file formats `civichub kb import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    JsonLines,
    /// A header row with the field names, then one entry per row.
    Csv,
}

impl Format {
    /// The format a file name suggests (`.csv`, else JSON Lines).
    pub fn for_path(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("csv") => Format::Csv,
            _ => Format::JsonLines,
        }
    }
}

/// A record that could not be loaded.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LineError {
    /// 1-based line in the file (CSV: the row's first line).
    pub line: usize,
    /// Why.
    pub message: String,
}

/// What an import did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Records read.
    pub read: usize,
    /// Records loaded.
    pub loaded: usize,
    /// Records refused.
    pub errors: Vec<LineError>,
}

/// Reads every record of `input`: `(line, record)` or the line's error.
pub fn read(input: impl std::io::Read, format: Format) -> Result<Vec<std::result::Result<(usize, EntryInput), LineError>>> {
    match format {
        Format::JsonLines => {
            let mut out = Vec::new();
            for (i, line) in std::io::BufReader::new(input).lines().enumerate() {
                let line_no = i + 1;
                let line = match line {
                    Ok(l) => l,
                    Err(e) => {
                        out.push(Err(LineError { line: line_no, message: format!("unreadable line: {e}") }));
                        continue;
                    }
                };
                let trimmed = line.trim().trim_start_matches('\u{feff}');
                if trimmed.is_empty() {
                    continue;
                }
                out.push(
                    serde_json::from_str::<EntryInput>(trimmed)
                        .map(|e| (line_no, e))
                        .map_err(|e| LineError { line: line_no, message: format!("invalid JSON: {e}") }),
                );
            }
            Ok(out)
        }
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
            let headers = reader.headers().map_err(|e| Error::Invalid(format!("CSV header row: {e}")))?.clone();
            let mut out = Vec::new();
            let mut record = csv::StringRecord::new();
            loop {
                let line_no = reader.position().line() as usize;
                match reader.read_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) => {
                        let line = record.position().map(|p| p.line() as usize).unwrap_or(line_no);
                        if record.len() > headers.len() {
                            // The fields would pair with the wrong columns.
                            out.push(Err(LineError {
                                line,
                                message: format!(
                                    "{} fields, but the header has {}: put a field that contains a comma in double quotes",
                                    record.len(),
                                    headers.len()
                                ),
                            }));
                            continue;
                        }
                        out.push(
                            record
                                .deserialize::<CsvRow>(Some(&headers))
                                .map(|row| (line, row.into()))
                                .map_err(|e| LineError { line, message: format!("invalid CSV row: {e}") }),
                        );
                    }
                    Err(e) => {
                        let line = e.position().map(|p| p.line() as usize).unwrap_or(line_no);
                        out.push(Err(LineError { line, message: format!("invalid CSV row: {e}") }));
                        if !matches!(e.kind(), csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. }) {
                            break;
                        }
                    }
                }
            }
            Ok(out)
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CsvRow {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    category_code: Option<String>,
    #[serde(default)]
    category_name: Option<String>,
    #[serde(default)]
    department: Option<String>,
    #[serde(default)]
    tags: Option<String>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    effective_from: Option<String>,
    #[serde(default)]
    effective_until: Option<String>,
    #[serde(default)]
    source_url: Option<String>,
}

impl From<CsvRow> for EntryInput {
    fn from(r: CsvRow) -> Self {
        EntryInput {
            id: r.id,
            title: r.title,
            body: r.body,
            category_code: r.category_code,
            category_name: r.category_name,
            department: r.department,
            tags: r.tags.map(crate::entry::TagsInput::Text),
            audience: r.audience,
            status: r.status,
            effective_from: r.effective_from,
            effective_until: r.effective_until,
            source_url: r.source_url,
        }
    }
}

/// The status of a record that gives none: a new entry is published, an
/// entry that exists keeps its own (re-importing a file must not bring back
/// what an editor withdrew).
async fn default_status(entries: &EntryStore, input: &EntryInput) -> Result<Status> {
    let given = input.status.as_deref().is_some_and(|s| !s.trim().is_empty());
    match input.id.as_deref().map(str::trim).filter(|id| !given && !id.is_empty()) {
        Some(id) => Ok(entries.get(id).await?.map_or(Status::Published, |e| e.status)),
        None => Ok(Status::Published),
    }
}

/// Loads the records into the knowledge base (create or replace by id);
/// `progress` is called after each record.
pub async fn load(
    entries: &EntryStore,
    records: Vec<std::result::Result<(usize, EntryInput), LineError>>,
    actor: Option<&str>,
    mut progress: impl FnMut(usize),
) -> Result<Summary> {
    let mut summary = Summary::default();
    for (i, record) in records.into_iter().enumerate() {
        summary.read += 1;
        let outcome = match record {
            Err(e) => Err(e),
            Ok((line, input)) => {
                let default = default_status(entries, &input).await?;
                match input.validate(default) {
                    Err(e) => Err(LineError { line, message: e.to_string() }),
                    Ok(valid) => match entries.upsert(valid, actor).await {
                        Ok(_) => Ok(()),
                        Err(e @ (Error::Invalid(_) | Error::Conflict(_))) => Err(LineError { line, message: e.to_string() }),
                        Err(e) => return Err(e),
                    },
                }
            }
        };
        match outcome {
            Ok(()) => summary.loaded += 1,
            Err(e) => summary.errors.push(e),
        }
        progress(i + 1);
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_rows_are_read_with_their_line_numbers() {
        let csv = "id,title,body,tags,audience\n\
                   kb-1,社保卡挂失,\"拨打12333或通过浙里办挂失。\n多行正文也可以。\",社保卡;挂失,public\n\
                   kb-2,只有两列\n\
                   kb-3,公积金查询,登录浙里办查询,公积金,public\n";
        let rows = read(csv.as_bytes(), Format::Csv).unwrap();
        assert_eq!(rows.len(), 3);
        let (line, first) = rows[0].as_ref().unwrap();
        assert_eq!(*line, 2);
        assert_eq!(first.title.as_deref(), Some("社保卡挂失"));
        // A short row reads with its missing fields empty; validation then names its line.
        let (line, short) = rows[1].as_ref().unwrap();
        assert_eq!(*line, 4, "the quoted body spans lines 2-3");
        assert!(short.clone().validate(Status::Published).is_err());
        let (line, _) = rows[2].as_ref().unwrap();
        assert_eq!(*line, 5);
        // More fields than the header: an unquoted comma would shift every column after it.
        let shifted = "id,title,body,department\nkb-9,医保报销,携带发票,身份证等材料,卫健委\n";
        let rows = read(shifted.as_bytes(), Format::Csv).unwrap();
        let err = rows[0].as_ref().unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("5 fields, but the header has 4"), "{}", err.message);
    }

    #[test]
    fn json_lines_errors_name_their_line_and_blank_lines_are_skipped() {
        let text = "{\"title\":\"a\",\"body\":\"b\"}\n\n{oops}\n{\"title\":\"c\",\"body\":\"d\",\"colour\":1}\n";
        let rows = read(text.as_bytes(), Format::JsonLines).unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].as_ref().unwrap_err().line, 3);
        let unknown = rows[2].as_ref().unwrap_err();
        assert_eq!(unknown.line, 4);
        assert!(unknown.message.contains("colour"), "unknown fields are refused by name: {}", unknown.message);
    }
}
