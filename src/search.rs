//! Search: the shared result types, and the two pure steps around the
//! database's full-text index: a user's query to index terms, and a hit's
//! body to a snippet with the matching words marked.
//!
//! Both are linear in their input and never produce markup: a snippet is a
//! list of plain-text fragments, and the page turns the marked ones into
//! `<mark>` elements (text nodes, escaped like any text).

use serde::{Deserialize, Serialize};

use crate::model::Role;

/// At most this many words of a query are searched for.
pub const MAX_TERMS: usize = 8;
/// Longer words are cut (no indexed word of a chat message is this long).
pub const MAX_TERM_CHARS: usize = 64;
/// Hits per page of results.
pub const PAGE_HITS: i64 = 20;
/// Characters of a snippet.
const SNIPPET_CHARS: usize = 200;
/// Characters of context a snippet shows before its first match.
const LEAD_CHARS: usize = 50;

/// One message found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    pub id: i64,
    pub thread_id: String,
    pub thread_title: String,
    pub author: String,
    pub role: Role,
    /// Unix epoch ms.
    pub created_at: i64,
    /// A piece of the body around the first match.
    pub snippet: Vec<Fragment>,
}

/// Plain text; `hit` when it is one of the searched words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragment {
    pub text: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hit: bool,
}

/// A page of hits, newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchResults {
    pub hits: Vec<SearchHit>,
    /// The cursor of the next (older) page, when there is one.
    pub next_before: Option<i64>,
}

/// A found message as the store reads it (the body is cut into a snippet
/// before it leaves the server).
#[derive(Clone, Debug)]
#[cfg_attr(feature = "ssr", derive(sqlx::FromRow))]
pub struct FoundMessage {
    pub id: i64,
    pub thread_id: String,
    pub thread_title: String,
    pub author: String,
    pub role: Role,
    pub created_at: i64,
    pub body: String,
}

impl FoundMessage {
    pub fn into_hit(self, terms: &[String]) -> SearchHit {
        SearchHit {
            snippet: snippet(&self.body, terms),
            id: self.id,
            thread_id: self.thread_id,
            thread_title: self.thread_title,
            author: self.author,
            role: self.role,
            created_at: self.created_at,
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric()
}

/// The words of `text` as (byte start, word), in order: runs of letters and
/// digits, the way the indexes (SQLite's `unicode61`, PostgreSQL's `simple`)
/// cut text.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut rest = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while let Some(&(_, c)) = rest.peek() {
            if is_word_char(c) {
                break;
            }
            rest.next();
        }
        let (start, _) = *rest.peek()?;
        let mut end = start;
        while let Some(&(i, c)) = rest.peek() {
            if !is_word_char(c) {
                break;
            }
            end = i + c.len_utf8();
            rest.next();
        }
        Some((start, &text[start..end]))
    })
}

/// A query's search terms: its words, lower-cased, each once, at most
/// [`MAX_TERMS`] of at most [`MAX_TERM_CHARS`] characters. Anything else in
/// the query (quotes, operators, markup) is a separator, so no input
/// reaches the index's own query language.
pub fn terms(query: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, word) in words(query) {
        if out.len() == MAX_TERMS {
            break;
        }
        let term: String = word
            .chars()
            .take(MAX_TERM_CHARS)
            .collect::<String>()
            .to_lowercase();
        if !out.contains(&term) {
            out.push(term);
        }
    }
    out
}

/// The terms as an FTS5 query: each a quoted string, all required.
pub fn fts5_query(terms: &[String]) -> String {
    terms
        .iter()
        .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// About [`SNIPPET_CHARS`] characters of `body` from a little before its
/// first word among `terms`, cut into plain and matching fragments.
pub fn snippet(body: &str, terms: &[String]) -> Vec<Fragment> {
    let is_term = |word: &str| terms.iter().any(|t| word.to_lowercase() == *t);
    let first = words(body)
        .find(|(_, w)| is_term(w))
        .map_or(0, |(at, _)| at);
    // Back up LEAD_CHARS characters from the first match.
    let start = body[..first]
        .char_indices()
        .rev()
        .nth(LEAD_CHARS - 1)
        .map_or(0, |(i, _)| i);
    let end = body[start..]
        .char_indices()
        .nth(SNIPPET_CHARS)
        .map_or(body.len(), |(i, _)| start + i);
    let window = &body[start..end];
    let mut out = Vec::new();
    let mut push = |text: &str, hit: bool| {
        if text.is_empty() {
            return;
        }
        match out.last_mut() {
            Some(Fragment { text: last, hit: h }) if *h == hit => last.push_str(text),
            _ => out.push(Fragment {
                text: text.to_owned(),
                hit,
            }),
        }
    };
    if start > 0 {
        push("…", false);
    }
    let mut done = 0;
    for (at, word) in words(window) {
        if is_term(word) {
            push(&window[done..at], false);
            push(word, true);
            done = at + word.len();
        }
    }
    push(&window[done..], false);
    if end < body.len() {
        push("…", false);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn terms_are_words_only() {
        assert_eq!(
            terms("  Rust, \"rust\" OR tokio*"),
            vec!["rust", "or", "tokio"]
        );
        assert_eq!(terms("<b>x</b>"), vec!["b", "x"]);
        assert!(terms("\"* - ( ) :").is_empty());
        assert_eq!(terms(&"a ".repeat(100)).len(), 1);
        assert_eq!(terms("a b c d e f g h i j").len(), MAX_TERMS);
        assert_eq!(fts5_query(&terms("NEAR(a b)")), "\"near\" \"a\" \"b\"");
    }

    #[test]
    fn snippet_marks_whole_words_and_keeps_text() {
        let s = snippet(
            "Say <b>Hello</b> to hello-world, not hellos.",
            &terms("hello"),
        );
        let marked: Vec<&str> = s
            .iter()
            .filter(|f| f.hit)
            .map(|f| f.text.as_str())
            .collect();
        assert_eq!(marked, vec!["Hello", "hello"]);
        let text: String = s.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(text, "Say <b>Hello</b> to hello-world, not hellos.");
    }

    #[test]
    fn snippet_starts_near_a_late_match() {
        let body = format!("{} needle {}", "x ".repeat(500), "y ".repeat(500));
        let s = snippet(&body, &terms("needle"));
        assert_eq!(s.first().unwrap().text.chars().next(), Some('…'));
        assert!(s.iter().any(|f| f.hit && f.text == "needle"));
        let chars: usize = s.iter().map(|f| f.text.chars().count()).sum();
        assert!(chars <= SNIPPET_CHARS + 2, "{chars}");
    }

    proptest! {
        // Hostile bodies and queries: no panic, the snippet is a piece of
        // the body (plus ellipses), and every marked fragment is a term.
        #[test]
        fn snippet_is_a_piece_of_the_body(body in "\\PC{0,400}", query in "\\PC{0,40}") {
            let terms = terms(&query);
            prop_assert!(terms.len() <= MAX_TERMS);
            let s = snippet(&body, &terms);
            let text: String = s.iter().map(|f| f.text.as_str()).collect();
            let inner = text.trim_start_matches('…').trim_end_matches('…');
            prop_assert!(body.contains(inner));
            for f in s.iter().filter(|f| f.hit) {
                prop_assert!(terms.contains(&f.text.to_lowercase()));
            }
        }
    }
}
