//! Snippets: the passage of a body that holds the most query words, with
//! each word marked `<em>`. Matching runs on the folded text (full-width,
//! traditional and case folded character for character), so no analyser
//! runs over the bodies of a result page.

use crate::analysis::fold;
use crate::index::html_escape;

/// The words to mark, folded, longest first.
#[derive(Clone, Debug, Default)]
pub struct Highlighter {
    words: Vec<Vec<char>>,
}

impl Highlighter {
    /// Marks `words` (query words and their synonyms). Single characters are
    /// marked only when the query has nothing longer: 的 or 办 everywhere is noise.
    pub fn new<I: IntoIterator<Item = String>>(words: I) -> Highlighter {
        let mut all: Vec<Vec<char>> = Vec::new();
        for w in words {
            let chars: Vec<char> = fold(w.trim()).chars().collect();
            if !chars.is_empty() && !all.contains(&chars) {
                all.push(chars);
            }
        }
        if all.iter().any(|w| w.len() > 1) {
            all.retain(|w| w.len() > 1);
        }
        all.sort_by_key(|w| std::cmp::Reverse(w.len()));
        Highlighter { words: all }
    }

    /// The best passage of at most `max_chars` characters, HTML-escaped, with
    /// matches in `<em>`; empty when no word occurs.
    pub fn snippet(&self, body: &str, max_chars: usize) -> String {
        let original: Vec<char> = body.chars().collect();
        let folded: Vec<char> = fold(body).chars().collect();
        if folded.len() != original.len() || self.words.is_empty() || max_chars == 0 {
            return String::new();
        }
        // Matches, longest word first, so a longer word wins where two overlap.
        let mut taken = vec![false; folded.len()];
        let mut matches: Vec<(usize, usize, usize)> = Vec::new(); // (start, end, word)
        for (w, word) in self.words.iter().enumerate() {
            let n = word.len();
            let mut i = 0;
            while i + n <= folded.len() {
                if folded[i..i + n] == word[..] && !taken[i..i + n].iter().any(|t| *t) {
                    taken[i..i + n].iter_mut().for_each(|t| *t = true);
                    matches.push((i, i + n, w));
                    i += n;
                } else {
                    i += 1;
                }
            }
        }
        if matches.is_empty() {
            return String::new();
        }
        matches.sort();
        // The window holding the most distinct words (then the most matches), a little context before.
        let mut best = (0usize, 0usize, 0usize); // (distinct, count, start)
        for &(start, _, _) in &matches {
            // A little context before; never a short window at the end.
            let from = start.saturating_sub(8).min(folded.len().saturating_sub(max_chars));
            let to = (from + max_chars).min(folded.len());
            let inside: Vec<&(usize, usize, usize)> = matches.iter().filter(|m| m.0 >= from && m.1 <= to).collect();
            let mut distinct: Vec<usize> = inside.iter().map(|m| m.2).collect();
            distinct.sort_unstable();
            distinct.dedup();
            let score = (distinct.len(), inside.len(), usize::MAX - from);
            if (score.0, score.1) > (best.0, best.1) {
                best = (score.0, score.1, from);
            }
        }
        let from = best.2;
        let to = (from + max_chars).min(original.len());
        let mut html = String::new();
        let mut i = from;
        for &(start, end, _) in matches.iter().filter(|m| m.0 >= from && m.1 <= to) {
            if start < i {
                continue;
            }
            html.push_str(&html_escape(&original[i..start].iter().collect::<String>()));
            html.push_str("<em>");
            html.push_str(&html_escape(&original[start..end].iter().collect::<String>()));
            html.push_str("</em>");
            i = end;
        }
        html.push_str(&html_escape(&original[i..to].iter().collect::<String>()));
        html
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(words: &[&str]) -> Highlighter {
        Highlighter::new(words.iter().map(|w| (*w).to_owned()))
    }

    #[test]
    fn marks_every_word_in_the_densest_passage() {
        let body = format!("{}公积金提取需要身份证。{}", "无关内容。".repeat(40), "公积金");
        let s = h(&["公积金", "提取"]).snippet(&body, 30);
        assert!(s.contains("<em>公积金</em><em>提取</em>需要身份证"), "{s}");
        let text = s.replace("<em>", "").replace("</em>", "");
        assert_eq!(text.chars().count(), 30, "{s}");
    }

    #[test]
    fn folds_traditional_and_full_width_but_shows_the_original() {
        let s = h(&["公积金", "abc"]).snippet("請查詢公積金與ＡＢＣ", 50);
        assert_eq!(s, "請查詢<em>公積金</em>與<em>ＡＢＣ</em>");
    }

    #[test]
    fn escapes_html_and_prefers_longer_words() {
        let s = h(&["医疗保险", "医疗", "的"]).snippet("<b>医疗保险</b>的报销", 50);
        assert_eq!(s, "&lt;b&gt;<em>医疗保险</em>&lt;/b&gt;的报销");
        assert_eq!(h(&["不存在"]).snippet("正文", 50), "");
        assert_eq!(h(&["的"]).snippet("我的", 50), "我<em>的</em>", "a one-character query still marks");
    }
}
