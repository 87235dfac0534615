//! A reply's tool calls: the third part of a reply (see [`Part::Tools`]).
//!
//! The part's text is a log of records, one JSON object per line, only ever
//! appended to like the answer and the thinking: a call begins (its index
//! in the reply, the provider's id, the tool's name, the step, and where
//! the answer stood), its arguments arrive in fragments, and its state
//! changes (waiting for approval, approved or denied by someone, running,
//! done or failed with its result). Stored in the same log, streamed with
//! the same offsets, proved by the same length and hash as the other two
//! parts, so every viewer and every reload sees exactly what was stored.
//! [`ToolLog`] folds the records into one [`ToolCall`] per call, in linear
//! time, fed as text arrives; a line that is not a record is skipped.
//!
//! [`Part::Tools`]: crate::model::Part::Tools

use serde::{Deserialize, Serialize};

use crate::model::body_hash;

/// Most calls one reply keeps; records for later calls are ignored (a
/// model cannot make the fold's work or the page grow without bound).
pub const MAX_CALLS: usize = 256;

/// Where a call is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolState {
    /// The model is still writing its arguments.
    #[default]
    Writing,
    /// Waiting for someone in the thread to approve or deny it.
    Waiting,
    /// Approved (by the record's `by`); about to run.
    Approved,
    Running,
    Done,
    Failed,
    Denied,
}

impl ToolState {
    /// Whether the call has its result (it never runs again).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ToolState::Done | ToolState::Failed | ToolState::Denied
        )
    }

    /// Its name, as the page marks a card (`data-state`).
    pub fn as_str(self) -> &'static str {
        match self {
            ToolState::Writing => "writing",
            ToolState::Waiting => "waiting",
            ToolState::Approved => "approved",
            ToolState::Running => "running",
            ToolState::Done => "done",
            ToolState::Failed => "failed",
            ToolState::Denied => "denied",
        }
    }

    /// What the page says about a call in this state.
    pub fn label(self) -> &'static str {
        match self {
            ToolState::Writing => "writing the call…",
            ToolState::Waiting => "waiting for approval",
            ToolState::Approved => "approved",
            ToolState::Running => "running…",
            ToolState::Done => "done",
            ToolState::Failed => "failed",
            ToolState::Denied => "denied",
        }
    }
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k")]
pub enum ToolRecord {
    /// Call `c` begins: in model step `step`, after `at` bytes of the answer.
    #[serde(rename = "call")]
    Call {
        c: u32,
        step: u32,
        at: usize,
        id: String,
        name: String,
    },
    /// A fragment of call `c`'s arguments (JSON text, as the model writes it).
    #[serde(rename = "args")]
    Args { c: u32, x: String },
    /// Call `c` is now in state `s`. `by`: who approved or denied; `h`: the
    /// hash of the arguments the state applies to (waiting, approved);
    /// `out`: the result (done) or the reason (failed, denied); `ms`: how
    /// long it ran.
    #[serde(rename = "state")]
    State {
        c: u32,
        s: ToolState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        h: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        out: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ms: Option<i64>,
    },
}

impl ToolRecord {
    /// The record as a line of the log.
    pub fn line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }

    /// A state change without the optional fields.
    pub fn state(c: u32, s: ToolState) -> Self {
        ToolRecord::State {
            c,
            s,
            by: None,
            h: None,
            out: None,
            ms: None,
        }
    }
}

/// One call as the log tells it so far.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Its number in the reply (from 0, over every step).
    pub index: u32,
    /// The model step it was made in (from 0).
    pub step: u32,
    /// Bytes of the answer written before it.
    pub at: usize,
    /// The provider's id for it (ours, `call_N`, when the provider gave none).
    pub id: String,
    pub name: String,
    pub arguments: String,
    pub state: ToolState,
    /// Who approved or denied it.
    pub decided_by: Option<String>,
    /// The result, or why it failed or was denied.
    pub output: Option<String>,
    pub ms: Option<i64>,
    /// Whether its arguments were whole (the model finished writing it):
    /// only such calls go back to the model.
    pub complete: bool,
    /// How many times it started waiting for approval (a decision is for
    /// one round: a call asked again after a restart needs a new one).
    pub round: u32,
}

impl ToolCall {
    /// The hash an approval binds: of the exact arguments shown.
    pub fn arguments_hash(&self) -> String {
        arguments_hash(&self.arguments)
    }
}

/// The hash of a call's arguments, as an approval names them.
pub fn arguments_hash(arguments: &str) -> String {
    body_hash(arguments)
}

/// The calls of a log, folded as its text arrives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ToolLog {
    calls: Vec<ToolCall>,
    /// The last line, until its newline arrives.
    partial: String,
    /// Bytes fed so far.
    len: usize,
}

impl ToolLog {
    pub fn parse(text: &str) -> Self {
        let mut log = Self::default();
        log.feed(text);
        log
    }

    /// Bytes of log text fed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn calls(&self) -> &[ToolCall] {
        &self.calls
    }

    pub fn call(&self, index: u32) -> Option<&ToolCall> {
        self.calls.iter().rev().find(|c| c.index == index)
    }

    /// Takes more of the log's text.
    pub fn feed(&mut self, text: &str) {
        self.len += text.len();
        let mut rest = text;
        while let Some(end) = rest.find('\n') {
            let line = if self.partial.is_empty() {
                &rest[..end]
            } else {
                self.partial.push_str(&rest[..end]);
                self.partial.as_str()
            };
            if let Ok(record) = serde_json::from_str::<ToolRecord>(line) {
                self.apply(record);
            }
            self.partial.clear();
            rest = &rest[end + 1..];
        }
        self.partial.push_str(rest);
    }

    fn apply(&mut self, record: ToolRecord) {
        let c = match &record {
            ToolRecord::Call { c, .. }
            | ToolRecord::Args { c, .. }
            | ToolRecord::State { c, .. } => *c,
        };
        // The one addressed is nearly always the last.
        let at = self.calls.iter().rposition(|call| call.index == c);
        let call = match (at, &record) {
            (Some(at), _) => &mut self.calls[at],
            (None, ToolRecord::Call { step, at, .. }) if self.calls.len() < MAX_CALLS => {
                // Kept in call order (a nameless call may begin late); where
                // it stands is fixed by its first record.
                let place = self.calls.partition_point(|call| call.index < c);
                self.calls.insert(
                    place,
                    ToolCall {
                        index: c,
                        step: *step,
                        at: *at,
                        ..ToolCall::default()
                    },
                );
                &mut self.calls[place]
            }
            _ => return,
        };
        match record {
            ToolRecord::Call { id, name, .. } => {
                if !id.is_empty() {
                    call.id = id;
                }
                if !name.is_empty() {
                    call.name = name;
                }
            }
            ToolRecord::Args { x, .. } => call.arguments.push_str(&x),
            ToolRecord::State {
                s, by, h, out, ms, ..
            } => {
                if s == ToolState::Waiting && call.state != ToolState::Waiting {
                    call.round += 1;
                }
                call.state = s;
                // A state naming the arguments' hash comes once they are whole.
                call.complete |= h.is_some();
                if by.is_some() {
                    call.decided_by = by;
                }
                if out.is_some() {
                    call.output = out;
                }
                if ms.is_some() {
                    call.ms = ms;
                }
            }
        }
    }
}

/// Text cut to at most `max` bytes (on a character boundary), saying so.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut at = max;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}… (cut at {max} bytes)", &text[..at])
}

/// Who may approve or deny a waiting call, in words: the card's line and
/// the refusal's.
pub fn who_may_decide(requester_only: bool, requested_by: Option<&str>) -> String {
    match (requester_only, requested_by) {
        (true, Some(name)) => format!("Only {name} (who asked) may approve or deny this call."),
        (true, None) => "Only the person who asked may approve or deny this call.".to_owned(),
        (false, _) => "Anyone in this thread may approve or deny this call.".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_card_names_who_may_decide() {
        assert_eq!(
            who_may_decide(true, Some("Ann")),
            "Only Ann (who asked) may approve or deny this call."
        );
        assert!(who_may_decide(false, Some("Ann")).starts_with("Anyone"));
    }

    fn log_of(records: &[ToolRecord]) -> String {
        records.iter().map(ToolRecord::line).collect()
    }

    fn sample() -> String {
        log_of(&[
            ToolRecord::Call {
                c: 0,
                step: 0,
                at: 5,
                id: "call_1".into(),
                name: "search".into(),
            },
            ToolRecord::Args {
                c: 0,
                x: "{\"q\":".into(),
            },
            ToolRecord::Args {
                c: 0,
                x: "\"rust\\n\"}".into(),
            },
            ToolRecord::state(0, ToolState::Running),
            ToolRecord::State {
                c: 0,
                s: ToolState::Done,
                by: None,
                h: None,
                out: Some("two hits".into()),
                ms: Some(12),
            },
        ])
    }

    #[test]
    fn records_fold_into_calls() {
        let log = ToolLog::parse(&sample());
        assert_eq!(log.calls().len(), 1);
        let call = &log.calls()[0];
        assert_eq!(call.name, "search");
        assert_eq!(call.arguments, "{\"q\":\"rust\\n\"}");
        assert_eq!(call.state, ToolState::Done);
        assert_eq!(call.output.as_deref(), Some("two hits"));
        assert_eq!(call.at, 5);
    }

    #[test]
    fn fed_in_any_pieces_it_folds_the_same() {
        let text = sample();
        let whole = ToolLog::parse(&text);
        for cut in 0..=text.len() {
            let mut log = ToolLog::default();
            log.feed(&text[..cut]);
            log.feed(&text[cut..]);
            assert_eq!(log.calls(), whole.calls(), "cut at {cut}");
        }
    }

    #[test]
    fn hostile_lines_are_skipped_and_calls_are_bounded() {
        let mut text = String::from("not json\n{\"k\":\"args\",\"c\":9,\"x\":\"orphan\"}\n");
        for c in 0..(MAX_CALLS as u32 + 10) {
            text += &ToolRecord::Call {
                c,
                step: 0,
                at: 0,
                id: String::new(),
                name: "t".into(),
            }
            .line();
        }
        text += "{\"k\":\"state\"";
        let log = ToolLog::parse(&text);
        assert_eq!(log.calls().len(), MAX_CALLS);
        assert!(log.calls().iter().all(|c| c.arguments.is_empty()));
    }

    use proptest::prelude::*;

    fn record() -> impl Strategy<Value = ToolRecord> {
        let text = "\\PC{0,12}";
        prop_oneof![
            (0u32..4, 0u32..3, 0usize..50, text, text).prop_map(|(c, step, at, id, name)| {
                ToolRecord::Call {
                    c,
                    step,
                    at,
                    id,
                    name,
                }
            }),
            (0u32..4, text).prop_map(|(c, x)| ToolRecord::Args { c, x }),
            (0u32..4, 0usize..7, proptest::option::of(text)).prop_map(|(c, s, out)| {
                let states = [
                    ToolState::Writing,
                    ToolState::Waiting,
                    ToolState::Approved,
                    ToolState::Running,
                    ToolState::Done,
                    ToolState::Failed,
                    ToolState::Denied,
                ];
                ToolRecord::State {
                    c,
                    s: states[s],
                    by: None,
                    h: Some("h".into()),
                    out,
                    ms: None,
                }
            }),
        ]
    }

    proptest! {
        /// Records, hostile lines among them, fed in any pieces (cut
        /// anywhere, even inside a character's bytes as text allows):
        /// the same calls as the whole log, never a panic.
        #[test]
        fn any_log_in_any_pieces_folds_like_the_whole(
            records in proptest::collection::vec(record(), 0..20),
            junk in proptest::collection::vec("\\PC{0,20}", 0..4),
            cuts in proptest::collection::vec(0usize..400, 0..6),
        ) {
            let mut text: String = records.iter().map(ToolRecord::line).collect();
            for j in &junk {
                text.push_str(j);
                text.push('\n');
            }
            let whole = ToolLog::parse(&text);
            let mut cuts: Vec<usize> = cuts
                .into_iter()
                .map(|c| c.min(text.len()))
                .filter(|c| text.is_char_boundary(*c))
                .collect();
            cuts.sort_unstable();
            let mut log = ToolLog::default();
            let mut from = 0;
            for cut in cuts {
                log.feed(&text[from..cut]);
                from = cut;
            }
            log.feed(&text[from..]);
            prop_assert_eq!(log.calls(), whole.calls());
            prop_assert_eq!(log.len(), text.len());
            // Arguments are the concatenation of a call's fragments.
            for call in whole.calls() {
                let expected: String = records
                    .iter()
                    .filter_map(|r| match r {
                        ToolRecord::Args { c, x } if *c == call.index => Some(x.as_str()),
                        _ => None,
                    })
                    .collect();
                prop_assert!(expected.ends_with(&call.arguments));
            }
        }
    }

    #[test]
    fn bounded_cuts_on_a_character() {
        assert_eq!(bounded("abc", 3), "abc");
        assert!(bounded("ééé", 3).starts_with("é…"));
    }
}
