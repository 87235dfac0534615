//! Turns a provider's token stream into the pieces that are committed and
//! published, at a granularity: every token, whole words, or whole
//! sentences. Text that waited longer than the maximum delay goes out
//! anyway, and the final flush always happens. Pieces are `String`s cut at
//! character boundaries, so a multi-byte character is never split.
//!
//! Time is passed in (`now`), which keeps the chunker pure and testable.

use std::time::Duration;

use tokio::time::Instant;

use crate::model::Granularity;

#[derive(Debug)]
pub struct Chunker {
    granularity: Granularity,
    max_delay: Duration,
    pending: String,
    /// When the oldest pending text arrived.
    since: Option<Instant>,
}

impl Chunker {
    pub fn new(granularity: Granularity, max_delay: Duration) -> Self {
        Self {
            granularity,
            max_delay,
            pending: String::new(),
            since: None,
        }
    }

    /// Takes a piece of text; returns what is ready to go out now.
    pub fn push(&mut self, text: &str, now: Instant) -> Option<String> {
        if text.is_empty() {
            return self.poll(now);
        }
        if self.pending.is_empty() {
            self.since = Some(now);
        }
        self.pending.push_str(text);
        if self.granularity == Granularity::Token {
            return self.flush();
        }
        if let Some(due) = self.poll(now) {
            return Some(due);
        }
        let cut = boundary(&self.pending, self.granularity)?;
        let rest = self.pending.split_off(cut);
        let ready = std::mem::replace(&mut self.pending, rest);
        self.since = (!self.pending.is_empty()).then_some(now);
        Some(ready)
    }

    /// Everything pending, if it has waited the maximum delay.
    pub fn poll(&mut self, now: Instant) -> Option<String> {
        match self.deadline() {
            Some(deadline) if now >= deadline => self.flush(),
            _ => None,
        }
    }

    /// When pending text must go out at the latest.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|since| since + self.max_delay)
    }

    /// When the oldest text waiting to go out arrived.
    pub fn pending_since(&self) -> Option<Instant> {
        self.since
    }

    /// Bytes waiting to go out.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Everything pending, now (the end of a stream).
    pub fn flush(&mut self) -> Option<String> {
        self.since = None;
        (!self.pending.is_empty()).then(|| std::mem::take(&mut self.pending))
    }
}

/// Characters that end a sentence when followed by whitespace.
fn ends_sentence(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | ';' | ':')
}

/// Characters that end a sentence on their own (CJK full-width punctuation, newlines).
fn ends_sentence_alone(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '\n')
}

/// The byte index just after the last boundary in `text`, if any: after
/// whitespace for words; after a sentence end (and the whitespace that
/// follows it) for sentences.
pub fn boundary(text: &str, granularity: Granularity) -> Option<usize> {
    match granularity {
        Granularity::Token => (!text.is_empty()).then_some(text.len()),
        Granularity::Word => text
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map(|(i, c)| i + c.len_utf8()),
        Granularity::Sentence => {
            let mut cut = None;
            let mut prev: Option<char> = None;
            for (i, c) in text.char_indices() {
                let after_end = prev.is_some_and(ends_sentence) && c.is_whitespace();
                if after_end || ends_sentence_alone(c) {
                    cut = Some(i + c.len_utf8());
                }
                prev = Some(c);
            }
            cut
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn words_go_out_whole() {
        let t = Instant::now();
        let mut c = Chunker::new(Granularity::Word, 1000 * MS);
        assert_eq!(c.push("Hel", t), None);
        assert_eq!(c.push("lo wor", t).as_deref(), Some("Hello "));
        assert_eq!(c.push("ld", t), None);
        assert_eq!(c.flush().as_deref(), Some("world"));
    }

    #[test]
    fn sentences_go_out_whole() {
        let t = Instant::now();
        let mut c = Chunker::new(Granularity::Sentence, 1000 * MS);
        assert_eq!(c.push("Pi is 3.14 ", t), None);
        assert_eq!(
            c.push("roughly. Next", t).as_deref(),
            Some("Pi is 3.14 roughly. ")
        );
        assert_eq!(c.push(" one。日本", t).as_deref(), Some("Next one。"));
        assert_eq!(c.flush().as_deref(), Some("日本"));
    }

    #[test]
    fn max_delay_flushes_pending_text() {
        let t = Instant::now();
        let mut c = Chunker::new(Granularity::Sentence, 100 * MS);
        assert_eq!(c.push("no end yet", t), None);
        assert_eq!(c.deadline(), Some(t + 100 * MS));
        assert_eq!(c.poll(t + 99 * MS), None);
        assert_eq!(c.poll(t + 100 * MS).as_deref(), Some("no end yet"));
        assert_eq!(c.deadline(), None);
    }

    fn text_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec![
                "a",
                "word",
                " ",
                "  ",
                ".",
                ". ",
                "!",
                "? ",
                "\n",
                "é",
                "日本",
                "。",
                "👩‍💻",
                "🇯🇵",
                "3.14",
                "…",
            ]),
            0..80,
        )
        .prop_map(|parts| parts.concat())
    }

    proptest! {
        /// For any text cut into any pieces arriving at any times, the
        /// published pieces concatenate to the text, each ends on a boundary
        /// unless the delay forced it out or it is the final flush, and no
        /// character waits longer than the maximum delay once polled.
        #[test]
        fn pieces_are_exact_and_respect_boundaries(
            text in text_strategy(),
            cuts in prop::collection::vec(1usize..7, 0..40),
            gaps in prop::collection::vec(0u64..80, 0..40),
            mode in prop::sample::select(vec![Granularity::Token, Granularity::Word, Granularity::Sentence]),
        ) {
            let chars: Vec<char> = text.chars().collect();
            let mut deltas = Vec::new();
            let mut at = 0;
            for cut in &cuts {
                let end = (at + cut).min(chars.len());
                if at >= end { break; }
                deltas.push(chars[at..end].iter().collect::<String>());
                at = end;
            }
            if at < chars.len() { deltas.push(chars[at..].iter().collect()); }

            let max_delay = 50 * MS;
            let mut now = Instant::now();
            let mut chunker = Chunker::new(mode, max_delay);
            // Arrival time of every character not yet published.
            let mut waiting: std::collections::VecDeque<Instant> = Default::default();
            let mut body = String::new();
            let mut publish = |piece: String, at: Instant, forced: bool, waiting: &mut std::collections::VecDeque<Instant>| -> Result<(), TestCaseError> {
                prop_assert!(!piece.is_empty());
                for _ in piece.chars() {
                    let arrived = waiting.pop_front().expect("published text had arrived");
                    prop_assert!(at - arrived <= max_delay, "a character waited {:?}", at - arrived);
                }
                if !forced && mode != Granularity::Token {
                    prop_assert_eq!(boundary(&piece, mode), Some(piece.len()), "{:?} piece {:?}", mode, piece);
                }
                body.push_str(&piece);
                Ok(())
            };
            for (i, delta) in deltas.iter().enumerate() {
                now += Duration::from_millis(gaps.get(i).copied().unwrap_or(1));
                // The generation loop wakes at the deadline.
                if let Some(deadline) = chunker.deadline().filter(|d| *d <= now) {
                    let piece = chunker.poll(deadline).expect("due text goes out");
                    prop_assert_eq!(chunker.deadline(), None);
                    publish(piece, deadline, true, &mut waiting)?;
                }
                waiting.extend(delta.chars().map(|_| now));
                if let Some(piece) = chunker.push(delta, now) {
                    publish(piece, now, false, &mut waiting)?;
                }
            }
            if let Some(last) = chunker.flush() {
                body.push_str(&last);
            }
            prop_assert_eq!(&body, &text);
        }
    }
}
