//! The search index: derived from the entry table, rebuilt at will, kept
//! current from `kb_changes`. One per hub node, under its data directory.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

use serde::Serialize;
use tantivy::collector::{Count, FacetCollector, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, PhraseQuery, Query, RangeQuery, TermQuery};
use tantivy::schema::{
    FAST, Facet, FacetOptions, Field, IndexRecordOption, STORED, STRING, Schema, TantivyDocument,
    TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{TextAnalyzer, Tokenizer};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, Score, Searcher, SegmentReader, Term};

use crate::analysis::{self, BIGRAM, BigramTokenizer, PINYIN, PREFIX, PinyinTokenizer, PrefixTokenizer, Synonyms, ZH, ZhTokenizer};
use crate::entry::{Audience, Entry};
use crate::snippet::Highlighter;
use crate::{Error, Result};

/// What a search may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Citizens and websites: public entries only.
    Public,
    /// Hotline agents: internal entries too.
    Internal,
}

/// A search as the API receives it, already checked.
#[derive(Clone, Debug)]
pub struct SearchRequest {
    /// The words typed.
    pub q: String,
    /// Only this category.
    pub category: Option<String>,
    /// Only this department.
    pub department: Option<String>,
    /// 1-based page.
    pub page: usize,
    /// Hits per page (1–100).
    pub size: usize,
}

/// One hit.
#[derive(Clone, Debug, Serialize)]
pub struct Hit {
    /// Entry id.
    pub id: String,
    /// Entry title.
    pub title: String,
    /// Passage of the body with matched terms in `<em>`; HTML-escaped.
    pub snippet: String,
    /// Category name.
    pub category: Option<String>,
    /// Department.
    pub department: Option<String>,
    /// Relevance.
    pub score: f32,
}

/// Counts per category and department over every match.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Facets {
    /// Category name → matches.
    pub category: HashMap<String, u64>,
    /// Department → matches.
    pub department: HashMap<String, u64>,
}

/// A page of results.
#[derive(Clone, Debug, Serialize)]
pub struct SearchResponse {
    /// Matches in all.
    pub total: usize,
    /// Time spent searching.
    pub took_ms: u64,
    /// This page.
    pub hits: Vec<Hit>,
    /// Facet counts.
    pub facets: Facets,
}

#[derive(Clone, Copy)]
struct Fields {
    id: Field,
    title: Field,
    title_bigram: Field,
    title_pinyin: Field,
    title_prefix: Field,
    body: Field,
    body_bigram: Field,
    body_pinyin: Field,
    tags: Field,
    category: Field,
    category_name: Field,
    department: Field,
    department_name: Field,
    audience: Field,
    effective_from: Field,
    effective_until: Field,
    updated_at: Field,
}

fn text(tokenizer: &str, stored: bool, positions: bool) -> TextOptions {
    let record = if positions { IndexRecordOption::WithFreqsAndPositions } else { IndexRecordOption::WithFreqs };
    let options = TextOptions::default()
        .set_indexing_options(TextFieldIndexing::default().set_tokenizer(tokenizer).set_index_option(record));
    if stored { options.set_stored() } else { options }
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let fields = Fields {
        id: b.add_text_field("id", STRING | STORED),
        title: b.add_text_field("title", text(ZH, true, true)),
        title_bigram: b.add_text_field("title_bigram", text(BIGRAM, false, false)),
        title_pinyin: b.add_text_field("title_pinyin", text(PINYIN, false, false)),
        title_prefix: b.add_text_field("title_prefix", text(PREFIX, false, false)),
        body: b.add_text_field("body", text(ZH, true, true)),
        body_bigram: b.add_text_field("body_bigram", text(BIGRAM, false, false)),
        body_pinyin: b.add_text_field("body_pinyin", text(PINYIN, false, false)),
        tags: b.add_text_field("tags", text(ZH, false, false)),
        category: b.add_facet_field("category", FacetOptions::default()),
        category_name: b.add_text_field("category_name", STORED),
        department: b.add_facet_field("department", FacetOptions::default()),
        department_name: b.add_text_field("department_name", STORED),
        audience: b.add_text_field("audience", STRING),
        effective_from: b.add_i64_field("effective_from", FAST),
        effective_until: b.add_i64_field("effective_until", FAST),
        updated_at: b.add_i64_field("updated_at", FAST),
    };
    (b.build(), fields)
}

fn register_analysers(index: &Index) {
    let t = index.tokenizers();
    t.register(ZH, TextAnalyzer::from(ZhTokenizer::default()));
    t.register(BIGRAM, TextAnalyzer::from(BigramTokenizer));
    t.register(PINYIN, TextAnalyzer::from(PinyinTokenizer));
    t.register(PREFIX, TextAnalyzer::from(PrefixTokenizer));
}

/// A facet with one path segment, whatever characters the name has.
fn facet(name: &str) -> Facet {
    Facet::from_path([name])
}

/// How far into the results a search may page (offset + page size).
pub const MAX_RESULT_WINDOW: usize = 1000;

/// The longest query a search takes, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

/// The index and its single writer.
pub struct KbIndex {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter<TantivyDocument>>,
    fields: Fields,
    synonyms: Synonyms,
}

impl std::fmt::Debug for KbIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KbIndex")
    }
}

const WRITER_HEAP: usize = 30_000_000;

/// Characters in a hit's snippet.
const SNIPPET_CHARS: usize = 120;

/// A term in more than this share of the entries is common (see `relevance`)…
const COMMON_TERM_SHARE: f64 = 0.02;
/// …provided that is more than this many entries: small indexes have no common terms.
const COMMON_TERM_MIN_DOCS: u64 = 1000;

impl KbIndex {
    /// Opens the index in `dir` (created if missing; recreated empty if its
    /// schema is not this one's), or in memory when `dir` is `None`.
    pub fn open(dir: Option<&Path>, synonyms: Synonyms) -> Result<KbIndex> {
        let (schema, fields) = schema();
        let index = match dir {
            None => Index::create_in_ram(schema),
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
                let mmap = MmapDirectory::open(dir).map_err(|e| Error::Invalid(format!("index directory: {e}")))?;
                match Index::open_or_create(mmap, schema.clone()) {
                    Ok(index) => index,
                    Err(_) => {
                        // Derived data with another schema: start over; the follower rebuilds it.
                        tracing::warn!("search index at {} has another schema; rebuilding", dir.display());
                        std::fs::remove_dir_all(dir).map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
                        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.display().to_string(), source })?;
                        let mmap = MmapDirectory::open(dir).map_err(|e| Error::Invalid(format!("index directory: {e}")))?;
                        Index::open_or_create(mmap, schema)?
                    }
                }
            }
        };
        register_analysers(&index);
        let writer = index.writer_with_num_threads(1, WRITER_HEAP)?;
        let reader: IndexReader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        // jieba loads its dictionary (~100 ms, ~30 MB) on first use. An index
        // with entries will be searched: load it now, not during a search. An
        // empty one (a hub that serves no knowledge base) need not pay for it.
        if reader.searcher().num_docs() > 0 {
            ZhTokenizer::default().words("台州市民热线");
        }
        Ok(KbIndex { index, reader, writer: Mutex::new(writer), fields, synonyms })
    }

    /// The last change (`kb_changes.seq`) this index has applied.
    pub fn applied(&self) -> Result<i64> {
        let metas = self.index.load_metas()?;
        Ok(metas.payload.and_then(|p| p.parse().ok()).unwrap_or(0))
    }

    fn document(&self, entry: &Entry) -> TantivyDocument {
        let f = &self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_text(f.id, &entry.id);
        for field in [f.title, f.title_bigram, f.title_pinyin, f.title_prefix] {
            doc.add_text(field, &entry.title);
        }
        for field in [f.body, f.body_bigram, f.body_pinyin] {
            doc.add_text(field, &entry.body);
        }
        for tag in &entry.tags {
            doc.add_text(f.tags, tag);
        }
        if let Some(c) = &entry.category_name {
            doc.add_facet(f.category, facet(c));
            doc.add_text(f.category_name, c);
        }
        if let Some(d) = &entry.department {
            doc.add_facet(f.department, facet(d));
            doc.add_text(f.department_name, d);
        }
        doc.add_text(f.audience, entry.audience.as_str());
        doc.add_i64(f.effective_from, entry.effective_from.unwrap_or(i64::MIN));
        doc.add_i64(f.effective_until, entry.effective_until.unwrap_or(i64::MAX));
        doc.add_i64(f.updated_at, entry.updated_at);
        doc
    }

    /// Brings `ids` up to date: each is removed, then added again if its
    /// current row (`entries`, by id) is published. Records `seq` as applied
    /// and makes the result visible to searches.
    pub fn apply(&self, ids: &[String], entries: &[Entry], seq: i64) -> Result<()> {
        let writer = self.writer.lock().map_err(|_| Error::Invalid("index writer poisoned".into()))?;
        for id in ids {
            writer.delete_term(Term::from_field_text(self.fields.id, id));
        }
        self.add_and_commit(writer, entries, seq)
    }

    /// Adds the published `entries`, commits with `seq` as the payload, and
    /// makes the result visible.
    fn add_and_commit(&self, mut writer: std::sync::MutexGuard<'_, IndexWriter<TantivyDocument>>, entries: &[Entry], seq: i64) -> Result<()> {
        for entry in entries.iter().filter(|e| e.status == crate::entry::Status::Published) {
            writer.add_document(self.document(entry))?;
        }
        let mut commit = writer.prepare_commit()?;
        commit.set_payload(&seq.to_string());
        commit.commit()?;
        drop(writer);
        self.reader.reload()?;
        Ok(())
    }

    /// Replaces the whole index with `entries`, as of change `seq`.
    pub fn rebuild(&self, entries: &[Entry], seq: i64) -> Result<()> {
        let writer = self.writer.lock().map_err(|_| Error::Invalid("index writer poisoned".into()))?;
        writer.delete_all_documents()?;
        self.add_and_commit(writer, entries, seq)
    }

    /// Number of searchable documents.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Whether the index holds no document.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn tokens<T: Tokenizer>(mut tokenizer: T, text: &str) -> Vec<String> {
        let mut stream = tokenizer.token_stream(text);
        let mut out = Vec::new();
        while tantivy::tokenizer::TokenStream::advance(&mut stream) {
            out.push(tantivy::tokenizer::TokenStream::token(&stream).text.clone());
        }
        out
    }

    /// The relevance part of a query: words (with synonyms) in title, tags
    /// and body, CJK bigrams, pinyin bigrams, and the whole query as a
    /// phrase for proximity.
    ///
    /// Like Lucene's common-terms query, terms found in a large share of the
    /// index (办理, 需要, the bigram 怎么 …) only add to the score of entries
    /// that match a rarer term; they do not make an entry match on their own.
    /// Without them a search for 居住证怎么办理 would enumerate and score
    /// half the index. When every term is common, every word is required.
    ///
    /// With `titles_first`, an all-common query needs its words in titles or
    /// tags: when every word is generic (怎么办理), an entry named for them
    /// is what is wanted, and the body matches are half the index. The
    /// caller retries without it when that finds nothing.
    fn relevance(&self, q: &str, searcher: &Searcher, titles_first: bool) -> Option<(Box<dyn Query>, Highlighter, bool)> {
        let f = &self.fields;
        let folded = analysis::fold(q);
        let words = ZhTokenizer::default().words(q);
        // (term, boost, the query word it stands for, if any)
        let mut terms: Vec<(Term, f32, Option<usize>)> = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for word in &words {
            if seen.contains(word) {
                continue;
            }
            seen.push(word.clone());
            let w = Some(seen.len() - 1);
            terms.push((Term::from_field_text(f.title, word), 3.0, w));
            terms.push((Term::from_field_text(f.tags, word), 2.0, w));
            terms.push((Term::from_field_text(f.body, word), 1.0, w));
            for synonym in self.synonyms.of(word) {
                terms.push((Term::from_field_text(f.title, synonym), 2.4, w));
                terms.push((Term::from_field_text(f.tags, synonym), 1.6, w));
                terms.push((Term::from_field_text(f.body, synonym), 0.8, w));
            }
        }
        for synonym in self.synonyms.expand(&folded) {
            for word in ZhTokenizer::default().words(&synonym) {
                terms.push((Term::from_field_text(f.title, &word), 2.0, None));
                terms.push((Term::from_field_text(f.body, &word), 0.7, None));
            }
        }
        for gram in Self::tokens(BigramTokenizer, q) {
            terms.push((Term::from_field_text(f.title_bigram, &gram), 1.2, None));
            terms.push((Term::from_field_text(f.body_bigram, &gram), 0.4, None));
        }
        for gram in Self::tokens(PinyinTokenizer, q) {
            terms.push((Term::from_field_text(f.title_pinyin, &gram), 0.9, None));
            terms.push((Term::from_field_text(f.body_pinyin, &gram), 0.3, None));
        }
        if terms.is_empty() {
            return None;
        }
        let body_words = terms
            .iter()
            .filter(|(t, _, _)| t.field() == f.body)
            .filter_map(|(t, _, _)| t.value().as_str().map(str::to_owned));
        let highlighter = Highlighter::new(body_words);
        let docs = searcher.num_docs();
        let cutoff = (docs as f64 * COMMON_TERM_SHARE).max(COMMON_TERM_MIN_DOCS as f64) as u64;
        let clause = |term: &Term, boost: f32| -> (Occur, Box<dyn Query>) {
            let query: Box<dyn Query> = Box::new(TermQuery::new(term.clone(), IndexRecordOption::WithFreqs));
            (Occur::Should, Box::new(BoostQuery::new(query, boost)))
        };
        // Commonness is a property of the text, not of one field: 怎么 in
        // every body is common even if only one title has it.
        let dfs: Vec<u64> = terms.iter().map(|(t, _, _)| searcher.doc_freq(t).unwrap_or(0)).collect();
        let mut text_df: HashMap<&[u8], u64> = HashMap::new();
        for ((term, _, _), df) in terms.iter().zip(&dfs) {
            let max = text_df.entry(term.serialized_value_bytes()).or_insert(0);
            *max = (*max).max(*df);
        }
        let (mut rare, mut common): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
        for ((term, boost, word), df) in terms.iter().zip(&dfs) {
            if *df == 0 {
                continue;
            }
            let shared = text_df.get(term.serialized_value_bytes()).copied().unwrap_or(*df);
            if shared <= cutoff {
                rare.push((term, *boost, *word));
            } else if word.is_some() {
                common.push((term, *boost, *word));
            }
            // A common bigram or pinyin gram (怎么, ban li) adds little to an
            // entry that matched on words, and costs a scorer per candidate.
        }
        // Common words rank entries by their titles only: in bodies they are
        // everywhere, weigh little (low IDF), and cost a scorer per candidate.
        let mut scoring: Vec<(Occur, Box<dyn Query>)> =
            common.iter().filter(|(t, _, _)| t.field() == f.title).map(|(t, b, _)| clause(t, *b)).collect();
        let phrase_words = ZhTokenizer::whole_words().words(q);
        if phrase_words.len() >= 2 {
            for (field, boost) in [(f.title, 2.0), (f.body, 1.0)] {
                let terms: Vec<(usize, Term)> = phrase_words
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (i, Term::from_field_text(field, w)))
                    .collect();
                let mut phrase = PhraseQuery::new_with_offset(terms);
                phrase.set_slop(8);
                scoring.push((Occur::Should, Box::new(BoostQuery::new(Box::new(phrase), boost))));
            }
        }
        let mut narrowed = false;
        let required: Box<dyn Query> = if !rare.is_empty() {
            Box::new(BooleanQuery::new(rare.iter().map(|(t, b, _)| clause(t, *b)).collect()))
        } else {
            // Every term is common: most query words (each in any field, or a
            // synonym) must match. Not all: search mode yields overlapping
            // words (怎么, 怎么办, 办理) that no one text has together.
            let words_in = |titles: bool| -> Vec<Vec<(Occur, Box<dyn Query>)>> {
                let mut per_word: Vec<Vec<(Occur, Box<dyn Query>)>> = (0..seen.len()).map(|_| Vec::new()).collect();
                for (term, boost, word) in &common {
                    if let Some(i) = word
                        && (!titles || term.field() != f.body)
                    {
                        per_word[*i].push(clause(term, *boost));
                    }
                }
                per_word
            };
            let everywhere = words_in(false);
            let in_titles = words_in(true);
            // Narrow to titles only when every word that occurs at all occurs in some title.
            narrowed = titles_first
                && everywhere.iter().zip(&in_titles).all(|(all, titles)| all.is_empty() == titles.is_empty());
            let per_word = if narrowed { in_titles } else { everywhere };
            let groups: Vec<(Occur, Box<dyn Query>)> = per_word
                .into_iter()
                .filter(|alternatives| !alternatives.is_empty())
                .map(|alternatives| -> (Occur, Box<dyn Query>) { (Occur::Should, Box::new(BooleanQuery::new(alternatives))) })
                .collect();
            if groups.is_empty() {
                return None;
            }
            let required = (groups.len() * 2).div_ceil(3);
            Box::new(BooleanQuery::with_minimum_required_clauses(groups, required))
        };
        scoring.insert(0, (Occur::Must, required));
        Some((Box::new(BooleanQuery::new(scoring)), highlighter, narrowed))
    }

    fn filters(&self, visibility: Visibility, category: Option<&str>, department: Option<&str>, now: i64) -> Vec<(Occur, Box<dyn Query>)> {
        let f = &self.fields;
        let mut must: Vec<(Occur, Box<dyn Query>)> = vec![
            (
                Occur::Must,
                Box::new(RangeQuery::new(Bound::Unbounded, Bound::Included(Term::from_field_i64(f.effective_from, now)))),
            ),
            (
                Occur::Must,
                Box::new(RangeQuery::new(Bound::Excluded(Term::from_field_i64(f.effective_until, now)), Bound::Unbounded)),
            ),
        ];
        if visibility == Visibility::Public {
            must.push((
                Occur::Must,
                Box::new(TermQuery::new(Term::from_field_text(f.audience, Audience::Public.as_str()), IndexRecordOption::Basic)),
            ));
        }
        if let Some(c) = category {
            must.push((Occur::Must, Box::new(TermQuery::new(Term::from_facet(f.category, &facet(c)), IndexRecordOption::Basic))));
        }
        if let Some(d) = department {
            must.push((Occur::Must, Box::new(TermQuery::new(Term::from_facet(f.department, &facet(d)), IndexRecordOption::Basic))));
        }
        must
    }

    fn stored(doc: &TantivyDocument, field: Field) -> Option<String> {
        doc.get_first(field).and_then(|v| v.as_str()).map(str::to_owned)
    }

    /// Searches; `now` decides which entries are in effect.
    pub fn search(&self, req: &SearchRequest, visibility: Visibility, now: i64) -> Result<SearchResponse> {
        let started = std::time::Instant::now();
        let searcher = self.reader.searcher();
        let first = self.search_with(&searcher, req, visibility, now, true, started)?;
        match first {
            (response, true) if response.total == 0 => Ok(self.search_with(&searcher, req, visibility, now, false, started)?.0),
            (response, _) => Ok(response),
        }
    }

    /// One search; the flag says whether the query was narrowed to titles.
    fn search_with(
        &self,
        searcher: &Searcher,
        req: &SearchRequest,
        visibility: Visibility,
        now: i64,
        titles_first: bool,
        started: std::time::Instant,
    ) -> Result<(SearchResponse, bool)> {
        let Some((relevance, highlighter, narrowed)) = self.relevance(&req.q, searcher, titles_first) else {
            if ZhTokenizer::default().words(&req.q).is_empty() && Self::tokens(BigramTokenizer, &req.q).is_empty() {
                return Err(Error::Invalid("the query has no searchable words".into()));
            }
            // Words that occur nowhere: nothing matches.
            let empty = SearchResponse { total: 0, took_ms: started.elapsed().as_millis() as u64, hits: Vec::new(), facets: Facets::default() };
            return Ok((empty, false));
        };
        // Tantivy reserves room for offset + size hits in every segment before
        // searching: pages deep into the results are refused first (as
        // Elasticsearch's max_result_window does), never allocated.
        let offset = req.page.saturating_sub(1).saturating_mul(req.size);
        if offset.saturating_add(req.size) > MAX_RESULT_WINDOW {
            return Err(Error::Invalid(format!(
                "only the first {MAX_RESULT_WINDOW} results can be paged through; narrow the search with more words, a category or a department"
            )));
        }
        let mut clauses = self.filters(visibility, req.category.as_deref(), req.department.as_deref(), now);
        clauses.push((Occur::Must, relevance));
        let query = BooleanQuery::new(clauses);
        let top = TopDocs::with_limit(req.size).and_offset(offset).tweak_score(move |segment: &SegmentReader| {
            let updated = segment.fast_fields().i64("updated_at").ok().map(|c| c.first_or_default_col(0));
            move |doc, score: Score| {
                // A mild freshness prior: a year-old entry keeps ~92 % of its score.
                let age_days = updated.as_ref().map_or(0.0, |c| ((now - c.get_val(doc)).max(0) as f32) / 86400.0);
                score * (1.0 + 0.1 * (0.5f32).powf(age_days / 365.0)) / 1.1
            }
        });
        let mut categories = FacetCollector::for_field("category");
        categories.add_facet(Facet::root());
        let mut departments = FacetCollector::for_field("department");
        departments.add_facet(Facet::root());
        let (total, hits, categories, departments) = searcher.search(&query, &(Count, top, categories, departments))?;
        if total > 0 && offset >= total {
            let last = total.div_ceil(req.size);
            return Err(Error::Invalid(format!("page {} is past the last page ({last})", req.page)));
        }
        let hits = hits
            .into_iter()
            .map(|(score, address)| self.hit(searcher, &highlighter, score, address))
            .collect::<Result<Vec<_>>>()?;
        let count = |counts: &tantivy::collector::FacetCounts| {
            counts
                .get(Facet::root())
                .map(|(facet, n)| (facet.to_path().first().map(|s| (*s).to_owned()).unwrap_or_default(), n))
                .collect::<HashMap<_, _>>()
        };
        let response = SearchResponse {
            total,
            took_ms: started.elapsed().as_millis() as u64,
            hits,
            facets: Facets { category: count(&categories), department: count(&departments) },
        };
        Ok((response, narrowed))
    }

    fn hit(&self, searcher: &Searcher, highlighter: &Highlighter, score: Score, address: DocAddress) -> Result<Hit> {
        let f = &self.fields;
        let doc: TantivyDocument = searcher.doc(address)?;
        let body = Self::stored(&doc, f.body).unwrap_or_default();
        let mut html = highlighter.snippet(&body, SNIPPET_CHARS);
        if html.is_empty() {
            let start: String = body.chars().take(SNIPPET_CHARS).collect();
            html = html_escape(&start);
        }
        Ok(Hit {
            id: Self::stored(&doc, f.id).unwrap_or_default(),
            title: Self::stored(&doc, f.title).unwrap_or_default(),
            snippet: html,
            category: Self::stored(&doc, f.category_name),
            department: Self::stored(&doc, f.department_name),
            score,
        })
    }

    /// Titles that begin with what has been typed, then titles that contain it.
    pub fn suggest(&self, q: &str, visibility: Visibility, limit: usize, now: i64) -> Result<Vec<String>> {
        let f = &self.fields;
        let prefix: String = analysis::fold(q).chars().filter(|c| !c.is_whitespace()).take(20).collect();
        if prefix.is_empty() {
            return Ok(Vec::new());
        }
        let searcher = self.reader.searcher();
        let mut out: Vec<String> = Vec::new();
        let collect = |query: Box<dyn Query>, out: &mut Vec<String>| -> Result<()> {
            let mut clauses = self.filters(visibility, None, None, now);
            clauses.push((Occur::Must, query));
            let top = searcher.search(&BooleanQuery::new(clauses), &TopDocs::with_limit(limit).order_by_score())?;
            for (_, address) in top {
                let doc: TantivyDocument = searcher.doc(address)?;
                if let Some(title) = Self::stored(&doc, f.title)
                    && !out.contains(&title) && out.len() < limit {
                        out.push(title);
                    }
            }
            Ok(())
        };
        collect(Box::new(TermQuery::new(Term::from_field_text(f.title_prefix, &prefix), IndexRecordOption::Basic)), &mut out)?;
        if out.len() < limit {
            let words = ZhTokenizer::default().words(q);
            let clauses: Vec<(Occur, Box<dyn Query>)> = words
                .iter()
                .map(|w| -> (Occur, Box<dyn Query>) {
                    (Occur::Should, Box::new(TermQuery::new(Term::from_field_text(f.title, w), IndexRecordOption::WithFreqs)))
                })
                .chain(Self::tokens(BigramTokenizer, q).into_iter().map(|g| -> (Occur, Box<dyn Query>) {
                    (Occur::Should, Box::new(TermQuery::new(Term::from_field_text(f.title_bigram, &g), IndexRecordOption::WithFreqs)))
                }))
                .collect();
            if !clauses.is_empty() {
                collect(Box::new(BooleanQuery::new(clauses)), &mut out)?;
            }
        }
        Ok(out)
    }
}

/// Escapes text for HTML.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Audience, Status};

    const NOW: i64 = 1_800_000_000;

    fn entry(id: &str, title: &str, body: &str) -> Entry {
        Entry {
            id: id.into(),
            title: title.into(),
            body: body.into(),
            category_code: None,
            category_name: Some("测试/分类".into()),
            department: Some("测试局".into()),
            tags: Vec::new(),
            audience: Audience::Public,
            status: Status::Published,
            effective_from: None,
            effective_until: None,
            source_url: None,
            version: 1,
            updated_at: NOW,
            updated_by: None,
        }
    }

    fn index(entries: &[Entry]) -> KbIndex {
        let index = KbIndex::open(None, Synonyms::builtin()).unwrap();
        index.rebuild(entries, 1).unwrap();
        index
    }

    fn ids(index: &KbIndex, q: &str, visibility: Visibility) -> Vec<String> {
        let req = SearchRequest { q: q.into(), category: None, department: None, page: 1, size: 10 };
        index.search(&req, visibility, NOW).unwrap().hits.into_iter().map(|h| h.id).collect()
    }

    #[test]
    fn a_title_match_outranks_a_body_match() {
        let i = index(&[
            entry("body", "办事指南", "办理居住证需要提供租房合同和身份证。"),
            entry("title", "居住证怎么办理", "携带材料到派出所办理。"),
        ]);
        assert_eq!(ids(&i, "居住证", Visibility::Public), ["title", "body"]);
    }

    #[test]
    fn words_close_together_outrank_words_far_apart() {
        let i = index(&[
            entry("far", "咨询", "公积金的问题很多，例如贷款、缴存、转移，另外还有离职以后的提取。"),
            entry("near", "咨询", "离职后公积金提取怎么办，公积金提取需要什么。"),
        ]);
        assert_eq!(ids(&i, "公积金提取", Visibility::Public)[0], "near");
    }

    #[test]
    fn fresher_entries_win_ties() {
        let mut old = entry("old", "停水通知查询", "停水通知可在官网查询。");
        old.updated_at = NOW - 3 * 365 * 86400;
        let new = entry("new", "停水通知查询", "停水通知可在官网查询。");
        let i = index(&[old, new]);
        assert_eq!(ids(&i, "停水通知", Visibility::Public), ["new", "old"]);
    }

    #[test]
    fn audience_and_effective_dates_decide_visibility() {
        let mut internal = entry("internal", "欠薪派单口径", "欠薪诉求派至劳动监察。");
        internal.audience = Audience::Internal;
        let mut lapsed = entry("lapsed", "欠薪旧规定", "欠薪旧办法。");
        lapsed.effective_until = Some(NOW - 1);
        let mut future = entry("future", "欠薪新规定", "欠薪新办法。");
        future.effective_from = Some(NOW + 86400);
        let mut draft = entry("draft", "欠薪草稿", "欠薪草稿。");
        draft.status = Status::Draft;
        let i = index(&[internal, lapsed, future, draft, entry("public", "欠薪投诉", "欠薪可以投诉。")]);
        assert_eq!(ids(&i, "欠薪", Visibility::Public), ["public"]);
        let mut agent = ids(&i, "欠薪", Visibility::Internal);
        agent.sort();
        assert_eq!(agent, ["internal", "public"]);
    }

    #[test]
    fn bigrams_synonyms_and_pinyin_widen_recall() {
        let i = index(&[
            entry("street", "三甲街道办事处地址", "三甲街道办事处位于路桥区。"),
            entry("insurance", "社会保险断缴怎么办", "社会保险中断后可以补缴。"),
            entry("claim", "医保报销流程", "医疗费用报销需要发票。"),
        ]);
        assert_eq!(ids(&i, "甲街", Visibility::Public), ["street"], "a bigram across word boundaries");
        assert_eq!(ids(&i, "社保断缴", Visibility::Public)[0], "insurance", "社保 means 社会保险");
        assert_eq!(ids(&i, "医保报消", Visibility::Public)[0], "claim", "报消 sounds like 报销");
        assert_eq!(ids(&i, "醫保報銷", Visibility::Public)[0], "claim", "traditional characters fold");
    }

    #[test]
    fn common_terms_only_score_when_a_rarer_term_matches() {
        let mut entries: Vec<Entry> = (0..1500).map(|i| entry(&format!("c{i}"), "办理指南", "这项业务怎么办理，需要什么材料。")).collect();
        entries.push(entry("r1", "居住证怎么办理", "居住证办理需要租房合同。"));
        entries.push(entry("r2", "居住证签注", "居住证每年签注一次。"));
        entries.push(entry("only-common", "业务受理", "怎么都可以。"));
        let i = index(&entries);
        let req = |q: &str| SearchRequest { q: q.into(), category: None, department: None, page: 1, size: 10 };
        let found = i.search(&req("居住证怎么办理"), Visibility::Public, NOW).unwrap();
        assert_eq!(found.total, 2, "entries with only 怎么/办理 do not match");
        assert_eq!(found.hits[0].id, "r1", "the common words still rank the entry that has them");
        let all_common = i.search(&req("怎么办理"), Visibility::Public, NOW).unwrap();
        assert_eq!(all_common.total, 1, "with no rare term the words are wanted in a title first");
        assert_eq!(all_common.hits[0].id, "r1");
        let bodies = i.search(&req("需要什么"), Visibility::Public, NOW).unwrap();
        assert_eq!(bodies.total, 1500, "no title has them: every body that does");
        assert!(i.search(&req("不存在的词语"), Visibility::Public, NOW).unwrap().hits.is_empty());
    }

    #[test]
    fn snippets_mark_matches_and_escape_html() {
        let i = index(&[entry("x", "公积金", "<b>注意</b>：公积金提取需要身份证。")]);
        let req = SearchRequest { q: "公积金".into(), category: None, department: None, page: 1, size: 10 };
        let hit = &i.search(&req, Visibility::Public, NOW).unwrap().hits[0];
        assert!(hit.snippet.contains("<em>公积金</em>"), "{}", hit.snippet);
        assert!(hit.snippet.contains("&lt;b&gt;"), "{}", hit.snippet);
    }
}
