//! Knowledge entries and their fields, parsed at the edge.

use chrono::{NaiveDate, TimeZone};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Who may see an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    /// Citizens and government websites.
    Public,
    /// Hotline agents only (scripts, dispatch notes).
    Internal,
}

/// Where an entry is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being written; never searchable.
    Draft,
    /// Searchable while effective.
    Published,
    /// Withdrawn; never searchable.
    Expired,
}

impl Audience {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Audience::Public => "public",
            Audience::Internal => "internal",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "public" => Ok(Audience::Public),
            "internal" => Ok(Audience::Internal),
            _ => Err(Error::Invalid(format!("audience must be public or internal, not {s:?}"))),
        }
    }
}

impl Status {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Published => "published",
            Status::Expired => "expired",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "draft" => Ok(Status::Draft),
            "published" => Ok(Status::Published),
            "expired" => Ok(Status::Expired),
            _ => Err(Error::Invalid(format!("status must be draft, published or expired, not {s:?}"))),
        }
    }
}

/// A knowledge entry as stored.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Entry {
    /// Stable id.
    pub id: String,
    /// Heading, often the citizen's question.
    pub title: String,
    /// Question and answer.
    pub body: String,
    /// GB/T 39666 code, where known.
    pub category_code: Option<String>,
    /// Category name, e.g. `社会保障/养老保险`.
    pub category_name: Option<String>,
    /// The handling unit (承办单位).
    pub department: Option<String>,
    /// Keywords.
    pub tags: Vec<String>,
    /// Who may see it.
    pub audience: Audience,
    /// Draft, published or expired.
    pub status: Status,
    /// First day it applies (`YYYY-MM-DD`), if limited.
    #[serde(serialize_with = "as_date")]
    pub effective_from: Option<i64>,
    /// First day it no longer applies (`YYYY-MM-DD`), if limited.
    #[serde(serialize_with = "as_date")]
    pub effective_until: Option<i64>,
    /// Where the policy text lives.
    pub source_url: Option<String>,
    /// Incremented by every change.
    pub version: i64,
    /// Last change (Unix seconds).
    pub updated_at: i64,
    /// Who made the last change.
    pub updated_by: Option<String>,
}

impl Entry {
    /// Whether a citizen may see it now: published, public, in effect.
    pub fn is_public_now(&self, now: i64) -> bool {
        self.audience == Audience::Public && self.is_searchable_now(now)
    }

    /// Whether an agent may find it now: published and in effect.
    pub fn is_searchable_now(&self, now: i64) -> bool {
        self.status == Status::Published
            && self.effective_from.is_none_or(|f| f <= now)
            && self.effective_until.is_none_or(|u| now < u)
    }
}

impl ValidEntry {
    /// The entry this becomes when stored as version 1 at `now` (for tools
    /// that index files without a database, such as the relevance evaluation).
    pub fn into_entry(self, fallback_id: String, now: i64) -> Entry {
        Entry {
            id: self.id.unwrap_or(fallback_id),
            title: self.title,
            body: self.body,
            category_code: self.category_code,
            category_name: self.category_name,
            department: self.department,
            tags: self.tags,
            audience: self.audience,
            status: self.status,
            effective_from: self.effective_from,
            effective_until: self.effective_until,
            source_url: self.source_url,
            version: 1,
            updated_at: now,
            updated_by: None,
        }
    }
}

/// Entry dates are days in China Standard Time (UTC+8, no daylight saving).
const CHINA: chrono::FixedOffset = match chrono::FixedOffset::east_opt(8 * 3600) {
    Some(offset) => offset,
    None => panic!("UTC+8 is a valid offset"),
};

fn china() -> chrono::FixedOffset {
    CHINA
}

/// `YYYY-MM-DD` to Unix seconds at midnight in China.
pub fn parse_date(s: &str) -> Result<i64> {
    let date = NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| Error::Invalid(format!("invalid date {s:?}: use YYYY-MM-DD")))?;
    let midnight = date.and_hms_opt(0, 0, 0).ok_or_else(|| Error::Invalid(format!("invalid date {s:?}")))?;
    china()
        .from_local_datetime(&midnight)
        .single()
        .map(|t| t.timestamp())
        .ok_or_else(|| Error::Invalid(format!("invalid date {s:?}")))
}

/// Unix seconds to `YYYY-MM-DD` in China.
pub fn format_date(secs: i64) -> String {
    china().timestamp_opt(secs, 0).single().map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default()
}

fn as_date<S: serde::Serializer>(v: &Option<i64>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match v {
        Some(secs) => s.serialize_str(&format_date(*secs)),
        None => s.serialize_none(),
    }
}

/// Tags arrive as a JSON array or as one string separated by commas,
/// semicolons or spaces (CSV).
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(untagged)]
pub enum TagsInput {
    /// `["社保", "缴费"]`
    List(Vec<String>),
    /// `"社保;缴费"`
    Text(String),
    /// Nothing given.
    #[default]
    None,
}

/// An entry as written by an editor, an import file or the API; fields
/// checked by [`EntryInput::validate`].
#[derive(Clone, Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct EntryInput {
    /// Given, or generated.
    #[serde(default)]
    pub id: Option<String>,
    /// Required.
    #[serde(default)]
    pub title: Option<String>,
    /// Required.
    #[serde(default)]
    pub body: Option<String>,
    /// Optional.
    #[serde(default)]
    pub category_code: Option<String>,
    /// Optional.
    #[serde(default)]
    pub category_name: Option<String>,
    /// Optional.
    #[serde(default)]
    pub department: Option<String>,
    /// Optional.
    #[serde(default)]
    pub tags: Option<TagsInput>,
    /// `public` (default) or `internal`.
    #[serde(default)]
    pub audience: Option<String>,
    /// `published` (default for imports), `draft` or `expired`.
    #[serde(default)]
    pub status: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    pub effective_from: Option<String>,
    /// `YYYY-MM-DD`.
    #[serde(default)]
    pub effective_until: Option<String>,
    /// Optional.
    #[serde(default)]
    pub source_url: Option<String>,
}

/// A checked entry, ready to store.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidEntry {
    /// Given id, if any.
    pub id: Option<String>,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Code.
    pub category_code: Option<String>,
    /// Category.
    pub category_name: Option<String>,
    /// Department.
    pub department: Option<String>,
    /// Tags.
    pub tags: Vec<String>,
    /// Audience.
    pub audience: Audience,
    /// Status.
    pub status: Status,
    /// From.
    pub effective_from: Option<i64>,
    /// Until.
    pub effective_until: Option<i64>,
    /// Source.
    pub source_url: Option<String>,
}

fn clean(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Whether `id` is a usable entry id: 1–64 ASCII letters, digits, `-` or `_`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl EntryInput {
    /// Checks every field; `default_status` applies when none is given.
    pub fn validate(self, default_status: Status) -> Result<ValidEntry> {
        let id = clean(self.id);
        if let Some(id) = &id
            && !valid_id(id) {
                return Err(Error::Invalid(format!("invalid id {id:?}: use 1-64 ASCII letters, digits, - or _")));
            }
        let title = clean(self.title).ok_or_else(|| Error::Invalid("title is required".into()))?;
        if title.chars().count() > 200 {
            return Err(Error::Invalid("title is longer than 200 characters".into()));
        }
        let body = clean(self.body).ok_or_else(|| Error::Invalid("body is required".into()))?;
        if body.len() > 100_000 {
            return Err(Error::Invalid("body is longer than 100000 bytes".into()));
        }
        let tags = match self.tags.unwrap_or_default() {
            TagsInput::List(v) => v,
            TagsInput::Text(s) => s.split([',', '，', ';', '；', ' ', '、']).map(str::to_owned).collect(),
            TagsInput::None => Vec::new(),
        };
        let tags: Vec<String> = tags.into_iter().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect();
        let audience = match clean(self.audience) {
            Some(a) => Audience::parse(&a)?,
            None => Audience::Public,
        };
        let status = match clean(self.status) {
            Some(s) => Status::parse(&s)?,
            None => default_status,
        };
        let effective_from = clean(self.effective_from).map(|d| parse_date(&d)).transpose()?;
        let effective_until = clean(self.effective_until).map(|d| parse_date(&d)).transpose()?;
        if let (Some(f), Some(u)) = (effective_from, effective_until)
            && u <= f {
                return Err(Error::Invalid("effective_until must be after effective_from".into()));
            }
        let source_url = clean(self.source_url);
        if let Some(u) = &source_url
            && !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(Error::Invalid(format!("source_url {u:?} must be an http(s) URL")));
            }
        Ok(ValidEntry {
            id,
            title,
            body,
            category_code: clean(self.category_code),
            category_name: clean(self.category_name),
            department: clean(self.department),
            tags,
            audience,
            status,
            effective_from,
            effective_until,
            source_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_default_to_published_and_public() {
        let e = EntryInput { title: Some("标题".into()), body: Some("正文".into()), ..Default::default() }
            .validate(Status::Published)
            .unwrap();
        assert_eq!((e.audience, e.status), (Audience::Public, Status::Published));
    }

    #[test]
    fn bad_fields_are_named() {
        let err = EntryInput { title: Some("t".into()), ..Default::default() }.validate(Status::Draft).unwrap_err();
        assert_eq!(err.to_string(), "body is required");
        let err = EntryInput { title: Some("t".into()), body: Some("b".into()), effective_from: Some("2024-13-01".into()), ..Default::default() }
            .validate(Status::Draft)
            .unwrap_err();
        assert!(err.to_string().contains("YYYY-MM-DD"));
    }

    #[test]
    fn dates_are_days_in_china() {
        let secs = parse_date("2025-01-01").unwrap();
        assert_eq!(format_date(secs), "2025-01-01");
        assert_eq!(secs % 86400, 16 * 3600, "midnight at UTC+8 is 16:00 UTC the day before");
    }

    #[test]
    fn csv_tags_split_on_separators() {
        let e = EntryInput { title: Some("t".into()), body: Some("b".into()), tags: Some(TagsInput::Text("社保;缴费，断缴".into())), ..Default::default() }
            .validate(Status::Published)
            .unwrap();
        assert_eq!(e.tags, vec!["社保", "缴费", "断缴"]);
    }
}
