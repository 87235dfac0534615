//! One model step's tool calls, assembled from the stream's fragments into
//! records of the reply's tool log as they arrive. Providers differ: the
//! first fragment may carry the role, the id and the name together, later
//! ones repeat `"id": ""`, indexes may start at 1, a whole call may come in
//! one chunk (even the finish chunk). Fragments are tied by `index` alone;
//! an empty id or name never overwrites one already known. Ids and names
//! are cut to [`MAX_LABEL_BYTES`]; a call's argument fragments are merged
//! into one record per flush (like text per commit), and are bounded by the
//! call's cap and by the room left in the reply.

use crate::server::ingest::provider::ToolCallDelta;
use crate::tools::ToolRecord;

/// Longest id or name a call keeps, in bytes.
pub const MAX_LABEL_BYTES: usize = 128;

/// Arguments held for one call before they are written anyway.
const HOLD_ARGS_BYTES: usize = 4096;

struct Assembling {
    /// The provider's index for it.
    provider_index: u32,
    /// Ours: its number in the reply.
    index: u32,
    id: String,
    name: String,
    /// Bytes of arguments taken (more past the cap are dropped).
    argument_bytes: usize,
    /// Arguments that came before its name (held until the call begins).
    held: String,
    /// Arguments of a begun call not yet written (merged into one record).
    pending: String,
    begun: bool,
    oversized: bool,
}

/// The calls of one step.
pub struct StepCalls {
    step: u32,
    /// The number the step's first call takes.
    base: u32,
    max_calls: usize,
    max_argument_bytes: usize,
    calls: Vec<Assembling>,
    /// Set once arguments were cut because the reply was full.
    reply_full: bool,
}

impl StepCalls {
    pub fn new(step: u32, base: u32, max_calls: usize, max_argument_bytes: usize) -> Self {
        Self {
            step,
            base,
            max_calls,
            max_argument_bytes,
            calls: Vec::new(),
            reply_full: false,
        }
    }

    /// Whether arguments were cut because the reply reached its size cap.
    pub fn reply_full(&self) -> bool {
        self.reply_full
    }

    /// Whether arguments are held, not yet written.
    pub fn holds_arguments(&self) -> bool {
        self.calls.iter().any(|c| !c.pending.is_empty())
    }

    /// The held arguments, one record per call.
    pub fn take_arguments(&mut self) -> Vec<ToolRecord> {
        let mut records = Vec::new();
        self.drain(&mut records);
        records
    }

    fn drain(&mut self, records: &mut Vec<ToolRecord>) {
        for call in &mut self.calls {
            if !call.pending.is_empty() {
                records.push(ToolRecord::Args {
                    c: call.index,
                    x: std::mem::take(&mut call.pending),
                });
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Our numbers of the step's calls, in order.
    pub fn indexes(&self) -> Vec<u32> {
        self.calls.iter().map(|c| c.index).collect()
    }

    /// Whether call `index`'s arguments passed the cap (the rest was dropped).
    pub fn oversized(&self, index: u32) -> bool {
        self.calls.iter().any(|c| c.index == index && c.oversized)
    }

    /// Takes one chunk's fragments; `answer_len` is how much of the answer
    /// is written, `room` how many bytes (as the log writes them: JSON
    /// escapes included) the reply has left for arguments. Returns the
    /// records to append now (arguments are held, see `take_arguments`).
    pub fn push(
        &mut self,
        deltas: Vec<ToolCallDelta>,
        answer_len: usize,
        mut room: usize,
    ) -> Vec<ToolRecord> {
        let mut records = Vec::new();
        for delta in deltas {
            let Some(at) = self.slot(delta.index.unwrap_or(0)) else {
                continue; // past the step's cap: ignored
            };
            let (name, arguments) = delta
                .function
                .map(|f| (f.name, f.arguments))
                .unwrap_or_default();
            self.identify(at, delta.id, name, answer_len, &mut records);
            if let Some(fragment) = arguments.filter(|a| !a.is_empty()) {
                self.add_arguments(at, fragment, &mut room, &mut records);
            }
        }
        records
    }

    /// The call the provider numbers `provider_index`, begun if new; `None`
    /// past the step's cap of calls.
    fn slot(&mut self, provider_index: u32) -> Option<usize> {
        if let Some(at) = self
            .calls
            .iter()
            .position(|c| c.provider_index == provider_index)
        {
            return Some(at);
        }
        if self.calls.len() >= self.max_calls {
            return None;
        }
        self.calls.push(Assembling {
            provider_index,
            index: self.base + self.calls.len() as u32,
            id: String::new(),
            name: String::new(),
            argument_bytes: 0,
            held: String::new(),
            pending: String::new(),
            begun: false,
            oversized: false,
        });
        Some(self.calls.len() - 1)
    }

    /// A fragment's id and name (an empty one never overwrites): the call's
    /// record begins once it has a name (with the arguments held till then);
    /// an id after the name is recorded again.
    fn identify(
        &mut self,
        at: usize,
        id: Option<String>,
        name: Option<String>,
        answer_len: usize,
        records: &mut Vec<ToolRecord>,
    ) {
        let new_id = id
            .filter(|id| !id.is_empty() && self.calls[at].id.is_empty())
            .map(|id| label(&id));
        let named = name
            .filter(|n| !n.is_empty() && self.calls[at].name.is_empty())
            .map(|n| label(&n));
        if !self.calls[at].begun && named.is_some() {
            // A new record: what other calls hold is written first.
            self.drain(records);
        }
        let call = &mut self.calls[at];
        if let Some(id) = &new_id {
            call.id = id.clone();
        }
        if let Some(name) = named {
            call.name = name;
        }
        if !call.begun && !call.name.is_empty() {
            call.begun = true;
            records.push(ToolRecord::Call {
                c: call.index,
                step: self.step,
                at: answer_len,
                id: call.id.clone(),
                name: call.name.clone(),
            });
            if !call.held.is_empty() {
                records.push(ToolRecord::Args {
                    c: call.index,
                    x: std::mem::take(&mut call.held),
                });
            }
        } else if call.begun && new_id.is_some() {
            // The id came after the name: the fold takes it from here.
            records.push(call_record(call, self.step, answer_len));
        }
    }

    /// A fragment of a call's arguments, cut to the call's cap and to the
    /// `room` left in the reply (what is kept stays a prefix; past a cap
    /// nothing more is kept), held and written in pieces.
    fn add_arguments(
        &mut self,
        at: usize,
        mut fragment: String,
        room: &mut usize,
        records: &mut Vec<ToolRecord>,
    ) {
        let call = &mut self.calls[at];
        if call.oversized {
            return;
        }
        let cap = self.max_argument_bytes.saturating_sub(call.argument_bytes);
        if fragment.len() > cap {
            call.oversized = true;
            let mut cut = cap;
            while !fragment.is_char_boundary(cut) {
                cut -= 1;
            }
            fragment.truncate(cut);
        }
        let (fits, written) = escaped_prefix(&fragment, *room);
        if fits < fragment.len() {
            call.oversized = true;
            self.reply_full = true;
            fragment.truncate(fits);
        }
        *room -= written;
        if fragment.is_empty() {
            return;
        }
        call.argument_bytes += fragment.len();
        if call.begun {
            call.pending.push_str(&fragment);
            if call.pending.len() >= HOLD_ARGS_BYTES {
                records.push(ToolRecord::Args {
                    c: call.index,
                    x: std::mem::take(&mut call.pending),
                });
            }
        } else {
            call.held.push_str(&fragment);
        }
    }

    /// At the step's end: calls that never got a name begin now (they fail
    /// as nameless), and calls without an id get ours (`call_N`).
    pub fn finish(&mut self, answer_len: usize) -> Vec<ToolRecord> {
        let mut records = Vec::new();
        self.drain(&mut records);
        for call in &mut self.calls {
            let begun = call.begun;
            if call.id.is_empty() {
                call.id = format!("call_{}", call.index);
            } else if begun {
                continue;
            }
            call.begun = true;
            records.push(call_record(call, self.step, answer_len));
            if !begun && !call.held.is_empty() {
                records.push(ToolRecord::Args {
                    c: call.index,
                    x: std::mem::take(&mut call.held),
                });
            }
        }
        records
    }
}

/// An id or a name as kept: at most [`MAX_LABEL_BYTES`].
fn label(text: &str) -> String {
    let mut at = text.len().min(MAX_LABEL_BYTES);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    text[..at].to_owned()
}

/// How much of `text` fits in `room` bytes once written as a JSON string
/// (serde_json's escapes: `"`, `\\` and `\n`-style controls take 2 bytes,
/// other controls 6): the prefix's length in `text`, and in the log.
pub fn escaped_prefix(text: &str, room: usize) -> (usize, usize) {
    let mut written = 0;
    for (at, c) in text.char_indices() {
        let bytes = match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c => c.len_utf8(),
        };
        if written + bytes > room {
            return (at, written);
        }
        written += bytes;
    }
    (text.len(), written)
}

fn call_record(call: &Assembling, step: u32, answer_len: usize) -> ToolRecord {
    ToolRecord::Call {
        c: call.index,
        step,
        at: answer_len,
        id: call.id.clone(),
        name: call.name.clone(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::server::ingest::provider::FunctionDelta;
    use crate::tools::ToolLog;

    fn delta(index: Option<u32>, id: &str, name: &str, arguments: &str) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: Some(id.to_owned()),
            function: Some(FunctionDelta {
                name: Some(name.to_owned()),
                arguments: Some(arguments.to_owned()),
            }),
        }
    }

    /// Folds what the assembler emitted for these chunks.
    fn assembled(chunks: Vec<Vec<ToolCallDelta>>, max_args: usize) -> ToolLog {
        let mut step = StepCalls::new(0, 0, 8, max_args);
        let mut text = String::new();
        for chunk in chunks {
            text.extend(step.push(chunk, 0, usize::MAX).iter().map(ToolRecord::line));
        }
        text.extend(step.finish(0).iter().map(ToolRecord::line));
        ToolLog::parse(&text)
    }

    #[test]
    fn providers_quirks_are_one_call_each() {
        // Qwen: continuations repeat an empty id; Claude-compatible: index 1
        // first; Groq: the whole call in one chunk.
        let log = assembled(
            vec![
                vec![delta(Some(1), "call_a", "weather", "")],
                vec![delta(Some(1), "", "", "{\"city\":")],
                vec![delta(Some(1), "", "", "\"Oslo\"}")],
                vec![delta(None, "call_b", "time", "{}")],
            ],
            1024,
        );
        let calls = log.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (
                calls[0].id.as_str(),
                calls[0].name.as_str(),
                calls[0].arguments.as_str()
            ),
            ("call_a", "weather", "{\"city\":\"Oslo\"}")
        );
        assert_eq!((calls[1].index, calls[1].name.as_str()), (1, "time"));
    }

    #[test]
    fn fragments_merge_into_one_record_and_labels_are_short() {
        let long = "n".repeat(1000);
        let mut step = StepCalls::new(0, 0, 8, 1 << 20);
        let mut records = step.push(vec![delta(Some(0), &long, &long, "")], 0, usize::MAX);
        for _ in 0..150 {
            records.extend(step.push(vec![delta(Some(0), "", "", "0123456789")], 0, usize::MAX));
        }
        assert!(step.holds_arguments());
        records.extend(step.finish(0));
        let args = records
            .iter()
            .filter(|r| matches!(r, ToolRecord::Args { .. }))
            .count();
        assert_eq!(args, 1, "1,500 bytes in 150 fragments: one record");
        let log = ToolLog::parse(&records.iter().map(ToolRecord::line).collect::<String>());
        let call = &log.calls()[0];
        assert_eq!(
            (call.id.len(), call.name.len()),
            (MAX_LABEL_BYTES, MAX_LABEL_BYTES)
        );
        assert_eq!(call.arguments, "0123456789".repeat(150));
    }

    #[test]
    fn arguments_stop_where_the_reply_is_full() {
        let mut step = StepCalls::new(0, 0, 8, 1 << 20);
        step.push(vec![delta(Some(0), "id", "t", "")], 0, 100);
        step.push(vec![delta(Some(0), "", "", "\"ab\"")], 0, 4);
        assert!(step.reply_full() && step.oversized(0));
        let records = step.take_arguments();
        let ToolRecord::Args { x, .. } = &records[0] else {
            panic!("{records:?}")
        };
        assert_eq!(
            x, "\"ab",
            "a quote is 2 bytes written: \"ab is 4, the last quote does not fit"
        );
        assert_eq!(escaped_prefix("é\u{1}x", 100), (4, 9));
    }

    #[test]
    fn a_call_without_an_id_or_a_name_still_begins() {
        let log = assembled(vec![vec![delta(Some(0), "", "", "{\"a\":1}")]], 1024);
        let call = &log.calls()[0];
        assert_eq!((call.id.as_str(), call.name.as_str()), ("call_0", ""));
        assert_eq!(call.arguments, "{\"a\":1}");
    }

    proptest! {
        /// Any fragments, any order of indexes: per index, the arguments
        /// are the fragments joined (up to the cap, never past it), the
        /// name the first non-empty one.
        #[test]
        fn fragments_assemble_per_index(
            fragments in proptest::collection::vec(
                (0u32..3, "[a-z]{0,3}", "\\PC{0,8}"), 1..30),
            cap in 1usize..40,
        ) {
            let chunks: Vec<Vec<ToolCallDelta>> = fragments
                .iter()
                .map(|(i, name, args)| vec![delta(Some(*i), "", name, args)])
                .collect();
            let log = assembled(chunks, cap);
            let mut order: Vec<u32> = Vec::new();
            for (i, _, _) in &fragments {
                if !order.contains(i) {
                    order.push(*i);
                }
            }
            prop_assert_eq!(log.calls().len(), order.len());
            for (call, index) in log.calls().iter().zip(&order) {
                let joined: String = fragments
                    .iter()
                    .filter(|(i, _, _)| i == index)
                    .map(|(_, _, a)| a.as_str())
                    .collect();
                prop_assert!(call.arguments.len() <= cap);
                prop_assert!(joined.starts_with(&call.arguments));
                if joined.len() <= cap {
                    prop_assert_eq!(&call.arguments, &joined);
                }
                let name = fragments
                    .iter()
                    .filter(|(i, n, _)| i == index && !n.is_empty())
                    .map(|(_, n, _)| n.clone())
                    .next()
                    .unwrap_or_default();
                prop_assert_eq!(&call.name, &name);
            }
        }
    }
}
