//! Chinese text analysis: folding, jieba words, CJK bigrams, pinyin bigrams
//! and query-time synonyms.
//!
//! Every analyser first folds the text character for character (full-width
//! to half-width, traditional to simplified, lower case), so offsets map
//! back to the original text for highlighting.

use std::collections::HashMap;

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};
use tantivy_jieba::JiebaTokenizer;

/// Name of the jieba (search mode) analyser in the index.
pub const ZH: &str = "civichub_zh";
/// Name of the CJK bigram analyser.
pub const BIGRAM: &str = "civichub_bigram";
/// Name of the pinyin bigram analyser (homophone typos).
pub const PINYIN: &str = "civichub_pinyin";
/// Name of the title prefix analyser (suggestions).
pub const PREFIX: &str = "civichub_prefix";

/// Folds one character: full-width ASCII to half-width, ideographic space
/// to space, ASCII to lower case.
fn fold_char(c: char) -> char {
    let c = match c {
        '\u{3000}' => ' ',
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        _ => c,
    };
    c.to_ascii_lowercase()
}

/// Folds a text for matching; the result has exactly as many characters as
/// the input.
pub fn fold(text: &str) -> String {
    let folded: String = text.chars().map(fold_char).collect();
    let simplified = fast2s::convert(&folded);
    if simplified.chars().count() == folded.chars().count() { simplified } else { folded }
}

/// Whether `c` is a CJK ideograph.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

/// Maps character indices of a folded text back to byte offsets of the original.
struct Offsets(Vec<usize>);

impl Offsets {
    fn of(original: &str) -> Self {
        let mut v: Vec<usize> = original.char_indices().map(|(b, _)| b).collect();
        v.push(original.len());
        Offsets(v)
    }

    fn byte(&self, char_index: usize) -> usize {
        self.0.get(char_index).copied().unwrap_or_else(|| self.0.last().copied().unwrap_or(0))
    }
}

/// A token stream over tokens computed up front.
pub struct VecTokenStream {
    tokens: Vec<Token>,
    index: usize,
}

impl VecTokenStream {
    fn new(tokens: Vec<Token>) -> Self {
        VecTokenStream { tokens, index: 0 }
    }
}

impl TokenStream for VecTokenStream {
    fn advance(&mut self) -> bool {
        if self.index < self.tokens.len() {
            self.index += 1;
            true
        } else {
            false
        }
    }

    fn token(&self) -> &Token {
        &self.tokens[self.index - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.index - 1]
    }
}

fn token(text: String, from_char: usize, to_char: usize, position: usize, offsets: &Offsets) -> Token {
    Token {
        offset_from: offsets.byte(from_char),
        offset_to: offsets.byte(to_char),
        position,
        text,
        position_length: 1,
    }
}

/// jieba in search mode (words and the shorter words inside them) over the
/// folded text, through `tantivy-jieba`. Positions are character offsets,
/// emitted in order, so phrase queries with some slop measure proximity.
#[derive(Clone, Default)]
pub struct ZhTokenizer {
    inner: JiebaTokenizer,
}

impl ZhTokenizer {
    /// jieba's default mode: whole words only, without the shorter words
    /// inside them (for phrase queries).
    pub fn whole_words() -> Self {
        ZhTokenizer { inner: JiebaTokenizer::with_search_mode(false) }
    }

    /// Dictionary words only: jieba's default mode without guessing unknown
    /// words (no HMM), so a run of unknown characters stays single
    /// characters (for counting topics, where a guessed word is noise).
    pub fn dictionary_words() -> Self {
        let mut inner = JiebaTokenizer::with_search_mode(false);
        inner.set_hmm(false);
        ZhTokenizer { inner }
    }

    /// The words of `text`, folded, in order.
    pub fn words(&mut self, text: &str) -> Vec<String> {
        let mut stream = self.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push(stream.token().text.clone());
        }
        out
    }
}

impl Tokenizer for ZhTokenizer {
    type TokenStream<'a> = VecTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> VecTokenStream {
        let folded = fold(text);
        let offsets = Offsets::of(text);
        // Byte offsets in the folded text, back to character indices.
        let folded_chars: Vec<usize> = folded.char_indices().map(|(b, _)| b).collect();
        let char_of = |byte: usize| folded_chars.partition_point(|&b| b < byte);
        let mut tokens = Vec::new();
        let mut stream = self.inner.token_stream(&folded);
        while stream.advance() {
            let t = stream.token();
            if !t.text.chars().any(char::is_alphanumeric) {
                continue;
            }
            let (from, to) = (char_of(t.offset_from), char_of(t.offset_to));
            tokens.push(token(t.text.clone(), from, to, from, &offsets));
        }
        tokens.sort_by_key(|t| (t.position, t.offset_to));
        VecTokenStream::new(tokens)
    }
}

/// Splits folded text into runs: CJK runs become overlapping bigrams (a
/// lone ideograph stays a unigram), other alphanumeric runs stay words.
fn runs(text: &str) -> Vec<(bool, usize, Vec<char>)> {
    let mut runs: Vec<(bool, usize, Vec<char>)> = Vec::new();
    for (i, c) in fold(text).chars().enumerate() {
        let kind = if is_cjk(c) {
            Some(true)
        } else if c.is_alphanumeric() {
            Some(false)
        } else {
            None
        };
        match (kind, runs.last_mut()) {
            (Some(k), Some((rk, start, chars))) if *rk == k && *start + chars.len() == i => chars.push(c),
            (Some(k), _) => runs.push((k, i, vec![c])),
            (None, _) => {}
        }
    }
    runs
}

/// Overlapping CJK character bigrams, so names and terms jieba does not
/// know still match.
#[derive(Clone, Default)]
pub struct BigramTokenizer;

impl Tokenizer for BigramTokenizer {
    type TokenStream<'a> = VecTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> VecTokenStream {
        let offsets = Offsets::of(text);
        let mut tokens = Vec::new();
        for (cjk, start, chars) in runs(text) {
            if cjk && chars.len() > 1 {
                for i in 0..chars.len() - 1 {
                    let pos = tokens.len();
                    tokens.push(token(chars[i..i + 2].iter().collect(), start + i, start + i + 2, pos, &offsets));
                }
            } else {
                let pos = tokens.len();
                tokens.push(token(chars.iter().collect(), start, start + chars.len(), pos, &offsets));
            }
        }
        VecTokenStream::new(tokens)
    }
}

/// Bigrams of toneless pinyin syllables (`gong_ji`, `ji_jin`): a query
/// typed with the wrong character of the same sound (公鸡金 for 公积金,
/// 报消 for 报销) still meets the entry.
#[derive(Clone, Default)]
pub struct PinyinTokenizer;

fn syllable(c: char) -> String {
    use pinyin::ToPinyin;
    match c.to_pinyin() {
        Some(p) => p.plain().to_owned(),
        None => c.to_string(),
    }
}

impl Tokenizer for PinyinTokenizer {
    type TokenStream<'a> = VecTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> VecTokenStream {
        let offsets = Offsets::of(text);
        let mut tokens = Vec::new();
        for (cjk, start, chars) in runs(text) {
            if !cjk || chars.len() < 2 {
                continue;
            }
            let syllables: Vec<String> = chars.iter().map(|&c| syllable(c)).collect();
            for i in 0..syllables.len() - 1 {
                let pos = tokens.len();
                tokens.push(token(format!("{}_{}", syllables[i], syllables[i + 1]), start + i, start + i + 2, pos, &offsets));
            }
        }
        VecTokenStream::new(tokens)
    }
}

/// Every prefix of the folded title (up to 20 characters), for suggestions
/// as the user types.
#[derive(Clone, Default)]
pub struct PrefixTokenizer;

impl Tokenizer for PrefixTokenizer {
    type TokenStream<'a> = VecTokenStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> VecTokenStream {
        let offsets = Offsets::of(text);
        let folded: Vec<char> = fold(text).chars().filter(|c| !c.is_whitespace()).collect();
        let tokens = (1..=folded.len().min(20))
            .map(|n| token(folded[..n].iter().collect(), 0, n, 0, &offsets))
            .collect();
        VecTokenStream::new(tokens)
    }
}

/// Query-time synonyms: groups of words that mean the same to a citizen
/// (社保 / 社会保险). A query word found in a group brings the whole group.
#[derive(Clone, Debug, Default)]
pub struct Synonyms {
    groups: Vec<Vec<String>>,
    by_word: HashMap<String, usize>,
}

impl Synonyms {
    /// Parses the synonym file: one group per line, words separated by
    /// spaces, commas or slashes; `#` starts a comment.
    pub fn parse(text: &str) -> Self {
        let mut s = Synonyms::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let words: Vec<String> = line
                .split(|c: char| c.is_whitespace() || c == ',' || c == '，' || c == '/' || c == '、')
                .filter(|w| !w.is_empty())
                .map(fold)
                .collect();
            if words.len() < 2 {
                continue;
            }
            let index = s.groups.len();
            for w in &words {
                s.by_word.insert(w.clone(), index);
            }
            s.groups.push(words);
        }
        s
    }

    /// The built-in synonyms (`knowledge-base/data/synonyms.txt`).
    pub fn builtin() -> Self {
        Self::parse(include_str!("../data/synonyms.txt"))
    }

    /// The other words of `word`'s group.
    pub fn of(&self, word: &str) -> Vec<&str> {
        match self.by_word.get(word) {
            Some(&i) => self.groups[i].iter().filter(|w| *w != word).map(String::as_str).collect(),
            None => Vec::new(),
        }
    }

    /// Synonym words that occur anywhere in `folded_query` (catches words
    /// jieba splits differently), with their group's other words.
    pub fn expand(&self, folded_query: &str) -> Vec<String> {
        let mut out = Vec::new();
        for group in &self.groups {
            if group.iter().any(|w| folded_query.contains(w.as_str())) {
                for w in group {
                    if !folded_query.contains(w.as_str()) && !out.contains(w) {
                        out.push(w.clone());
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<T: Tokenizer>(mut t: T, s: &str) -> Vec<String> {
        let mut stream = t.token_stream(s);
        let mut out = Vec::new();
        while stream.advance() {
            out.push(stream.token().text.clone());
        }
        out
    }

    #[test]
    fn folding_is_char_for_char() {
        assert_eq!(fold("ＡＰＰ１２３４５"), "app12345");
        assert_eq!(fold("醫療保險"), "医疗保险");
        assert_eq!(fold("醫療保險").chars().count(), "醫療保險".chars().count());
    }

    #[test]
    fn jieba_search_mode_yields_words_and_inner_words() {
        let words = texts(ZhTokenizer::default(), "住房公积金提取");
        assert!(words.contains(&"公积金".to_owned()), "{words:?}");
        assert!(words.contains(&"提取".to_owned()), "{words:?}");
    }

    #[test]
    fn jieba_offsets_point_into_the_original_text() {
        let text = "ＡＰＰ上的醫保";
        let mut t = ZhTokenizer::default();
        let mut stream = t.token_stream(text);
        let mut seen = Vec::new();
        while stream.advance() {
            let tok = stream.token();
            seen.push((tok.text.clone(), text[tok.offset_from..tok.offset_to].to_owned()));
        }
        assert!(seen.contains(&("医保".to_owned(), "醫保".to_owned())), "{seen:?}");
        assert!(seen.contains(&("app".to_owned(), "ＡＰＰ".to_owned())), "{seen:?}");
    }

    #[test]
    fn bigrams_cover_unknown_names() {
        assert_eq!(texts(BigramTokenizer, "椒江区 ETC"), vec!["椒江", "江区", "etc"]);
        assert_eq!(texts(BigramTokenizer, "水"), vec!["水"]);
    }

    #[test]
    fn pinyin_bigrams_meet_homophone_typos() {
        assert_eq!(texts(PinyinTokenizer, "公鸡金"), texts(PinyinTokenizer, "公积金"));
        assert_eq!(texts(PinyinTokenizer, "报消"), vec!["bao_xiao"]);
    }

    #[test]
    fn prefixes_for_suggestions() {
        assert_eq!(texts(PrefixTokenizer, "社保 卡"), vec!["社", "社保", "社保卡"]);
    }

    #[test]
    fn synonyms_expand_both_ways() {
        let s = Synonyms::parse("社保 社会保险\n公积金, 住房公积金 # comment\n");
        assert_eq!(s.of("社保"), vec!["社会保险"]);
        assert_eq!(s.expand("社会保险断缴"), vec!["社保"]);
        assert!(s.expand("公积金提取").contains(&"住房公积金".to_owned()));
        assert!(Synonyms::builtin().of("医保").contains(&"医疗保险"));
    }
}
