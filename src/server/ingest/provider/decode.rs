//! A started stream's body, read on the reply's own task: its bytes
//! capped per line and per event as they arrive ([`EventCap`]), its
//! server-sent events decoded by [`SseDecoder`] (`eventsource-stream`'s
//! rules, which async-openai uses: `[DONE]` ends, `keepalive` events are
//! skipped) and each event's data read as a [`Chunk`] by serde. A
//! malformed chunk is an error item and the stream goes on (async-openai's
//! rule: the reply decides); a failed connection, a cap passed or a line
//! that is not UTF-8 is its last item. Reading on the reply's task
//! matters: async-openai's own stream forwards every chunk through a task
//! it spawns, one more hand-off between threads for each token.

use std::{
    pin::Pin,
    task::{ready, Context, Poll},
};

use async_openai::error::{OpenAIError, StreamError};
use axum::body::Bytes;
use futures::Stream;

use super::{
    sse::SseDecoder,
    wire::{Chunk, ChunkStream},
};

/// Why a body stopped before its end: the connection failed (its words,
/// safe to show).
#[derive(Debug)]
pub struct BodyError(pub String);

/// The chunks of a body (see the module's documentation); a line, or an
/// event, longer than `max` bytes ends it.
pub fn chunks<S>(body: S, max: usize) -> ChunkStream
where
    S: Stream<Item = Result<Bytes, BodyError>> + Send + 'static,
{
    Box::pin(Chunks {
        body: Box::pin(body),
        cap: EventCap::new(max),
        sse: SseDecoder::default(),
        body_ended: false,
        done: false,
    })
}

/// [`chunks`]' stream: polled by the reply's task, it reads the body only
/// when the bytes already read hold no complete event.
struct Chunks<S> {
    body: Pin<Box<S>>,
    cap: EventCap,
    sse: SseDecoder,
    body_ended: bool,
    /// Its last item was given.
    done: bool,
}

impl<S> Stream for Chunks<S>
where
    S: Stream<Item = Result<Bytes, BodyError>> + Send,
{
    type Item = Result<Chunk, OpenAIError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.sse.next() {
                Ok(true) => {
                    let event = this.sse.event();
                    if event.data == "[DONE]" {
                        this.done = true;
                        return Poll::Ready(None);
                    }
                    if event.kind == "keepalive" {
                        continue;
                    }
                    return Poll::Ready(Some(
                        serde_json::from_str::<Chunk>(event.data)
                            .map_err(|e| OpenAIError::JSONDeserialize(e, event.data.to_owned())),
                    ));
                }
                Ok(false) => {}
                Err(_) => return this.last(broke("the stream is not UTF-8")),
            }
            if this.body_ended {
                this.done = true;
                return Poll::Ready(
                    this.sse
                        .finish()
                        .err()
                        .map(|_| Err(broke("the stream is not UTF-8"))),
                );
            }
            match ready!(this.body.as_mut().poll_next(cx)) {
                Some(Ok(bytes)) => {
                    if let Err(what) = this.cap.take(&bytes) {
                        let max = this.cap.max;
                        // A cap passed is ours, said as a reply shows it (the
                        // one `InvalidArgument` a started stream carries).
                        return this.last(OpenAIError::InvalidArgument(format!(
                            "The provider sent {what} longer than {max} bytes; the reply was ended."
                        )));
                    }
                    this.sse.feed(&bytes);
                }
                Some(Err(BodyError(words))) => {
                    return this.last(broke(&format!("Transport error: {words}")))
                }
                None => this.body_ended = true,
            }
        }
    }
}

impl<S> Chunks<S> {
    fn last(&mut self, error: OpenAIError) -> Poll<Option<Result<Chunk, OpenAIError>>> {
        self.done = true;
        Poll::Ready(Some(Err(error)))
    }
}

/// The stream broke (`words` are safe to show).
fn broke(words: &str) -> OpenAIError {
    OpenAIError::StreamError(Box::new(StreamError::EventStream(words.to_owned())))
}

/// What [`EventCap`] found too long.
pub const OVER_LINE: &str = "a line";
pub const OVER_EVENT: &str = "an event";

/// Counts an SSE body's bytes per line and per event as they pass.
#[derive(Debug)]
pub struct EventCap {
    max: usize,
    /// Bytes of the line being read (without its newline).
    line: usize,
    /// Whether that line so far is only a `\r` (a CRLF blank line).
    line_is_cr: bool,
    /// Bytes of the event's finished lines (with their newlines).
    event: usize,
}

impl EventCap {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            line: 0,
            line_is_cr: false,
            event: 0,
        }
    }

    /// Takes the next bytes of the body; `Err` names what first grew past
    /// the cap, byte by byte: a line (its bytes without the newline), or
    /// an event (its lines with their newlines, up to the blank line).
    /// Linear in the bytes, and the same however they are split.
    pub fn take(&mut self, mut bytes: &[u8]) -> Result<(), &'static str> {
        loop {
            let (piece, ended) = match memchr::memchr(b'\n', bytes) {
                Some(at) => (&bytes[..at], true),
                None => (bytes, false),
            };
            if !piece.is_empty() {
                self.line_is_cr = self.line == 0 && piece == b"\r";
                self.line += piece.len();
                if self.event + self.line > self.max {
                    // With lines before it, the event passed first.
                    return Err(if self.event == 0 {
                        OVER_LINE
                    } else {
                        OVER_EVENT
                    });
                }
            }
            if !ended {
                return Ok(());
            }
            if self.line == 0 || (self.line == 1 && self.line_is_cr) {
                self.event = 0; // a blank line ends the event
            } else {
                self.event += self.line + 1;
                if self.event > self.max {
                    return Err(OVER_EVENT);
                }
            }
            self.line = 0;
            self.line_is_cr = false;
            bytes = &bytes[piece.len() + 1..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{EventCap, OVER_EVENT, OVER_LINE};
    use proptest::prelude::*;

    #[test]
    fn lines_and_events_are_capped_blank_lines_reset() {
        let mut cap = EventCap::new(10);
        assert_eq!(cap.take(b"data: 1234"), Ok(()), "10 bytes fit");
        assert_eq!(cap.take(b"\n"), Err(OVER_EVENT), "with its newline, 11");
        let mut cap = EventCap::new(16);
        assert_eq!(cap.take(b"data: 12\n\ndata: 34\r\n\r\ndata: 5"), Ok(()));
        assert_eq!(cap.take(b"6\n"), Ok(()));
        assert_eq!(
            cap.take(b"data: 78"),
            Err(OVER_EVENT),
            "two lines, no blank one"
        );
        let mut cap = EventCap::new(8);
        assert_eq!(cap.take(b"012345678"), Err(OVER_LINE));
    }

    proptest! {
        /// However a body is cut into chunks, the cap trips exactly where
        /// a line, or an event's lines together, first pass it.
        #[test]
        fn the_split_never_matters(
            body in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), Just(b'd')], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..20),
            max in 1usize..40,
        ) {
            let mut whole = EventCap::new(max);
            let expected = whole.take(&body);
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c <= body.len()).collect();
            cuts.sort();
            cuts.push(body.len());
            let mut split = EventCap::new(max);
            let mut at = 0;
            let mut got = Ok(());
            for cut in cuts {
                got = split.take(&body[at..cut]);
                at = cut;
                if got.is_err() {
                    break;
                }
            }
            prop_assert_eq!(got, expected);
            // The reference, byte by byte on the whole text.
            let (mut line, mut event, mut cr, mut first) = (0usize, 0usize, false, None);
            for &b in &body {
                if b == b'\n' {
                    if line == 0 || (line == 1 && cr) {
                        event = 0;
                    } else {
                        event += line + 1;
                        if event > max {
                            first = Some(OVER_EVENT);
                            break;
                        }
                    }
                    line = 0;
                    cr = false;
                } else {
                    cr = line == 0 && b == b'\r';
                    line += 1;
                    if event + line > max {
                        first = Some(if event == 0 { OVER_LINE } else { OVER_EVENT });
                        break;
                    }
                }
            }
            prop_assert_eq!(expected, first.map_or(Ok(()), Err));
        }
    }

    /// Our decoder against `eventsource-stream` alone, on adversarial
    /// bodies (CR, LF and CRLF line ends, comments, `[DONE]`, keepalives,
    /// malformed JSON, long lines) cut at arbitrary points: under the caps
    /// both yield the same items; past them ours yields a prefix of what
    /// the plain decoder would, then says which cap was passed.
    mod differential {
        use async_openai::error::OpenAIError;
        use axum::body::Bytes;
        use eventsource_stream::Eventsource;
        use futures::StreamExt;
        use proptest::prelude::*;

        use super::super::{chunks, BodyError, EventCap};
        use crate::server::ingest::provider::wire::Chunk;

        fn seen(item: Result<Chunk, OpenAIError>) -> String {
            match item {
                Ok(chunk) => format!("{chunk:?}"),
                Err(OpenAIError::InvalidArgument(_)) => "over the cap".into(),
                Err(OpenAIError::JSONDeserialize(_, data)) => format!("malformed: {data}"),
                Err(other) => format!("broke: {other}"),
            }
        }

        fn ours(pieces: &[Vec<u8>], max: usize) -> Vec<String> {
            let body = futures::stream::iter(
                pieces
                    .iter()
                    .map(|p| Ok::<_, BodyError>(Bytes::from(p.clone())))
                    .collect::<Vec<_>>(),
            );
            futures::executor::block_on(chunks(body, max).map(seen).collect())
        }

        /// `eventsource-stream` alone, with the same rules.
        fn reference(body: &[u8]) -> Vec<String> {
            let events = futures::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from(
                body.to_vec(),
            ))])
            .eventsource();
            futures::executor::block_on(async {
                let mut out = Vec::new();
                let mut events = std::pin::pin!(events);
                while let Some(event) = events.next().await {
                    let Ok(event) = event else {
                        out.push("broke".into());
                        break;
                    };
                    if event.data == "[DONE]" {
                        break;
                    }
                    if event.event == "keepalive" {
                        continue;
                    }
                    out.push(seen(serde_json::from_str::<Chunk>(&event.data).map_err(
                        |e| OpenAIError::JSONDeserialize(e, event.data.clone()),
                    )));
                }
                out
            })
        }

        /// `eventsource-stream` panicked here (see below); ours drops
        /// the mark as the standard says.
        #[test]
        fn a_body_starting_with_a_byte_order_mark_streams() {
            let body = "\u{feff}data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
            let got = ours(&[body.as_bytes().to_vec()], 400);
            assert_eq!(got.len(), 1);
            assert!(got[0].contains("\"hi\""), "{got:?}");
        }

        fn fragment() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec![
                "data: ",
                "data:",
                "{\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}",
                "{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4},\"choices\":[]}",
                "{\"choices\":[",
                "[DONE]",
                "event: keepalive",
                ": comment",
                "id: 7",
                "retry: 10",
                "\n",
                "\r\n",
                "\r",
                "\n\n",
                "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                "é",
                "\u{feff}",
                ":",
                "event: other",
                "data",
            ])
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            #[test]
            fn agrees_with_eventsource_stream(
                parts in prop::collection::vec(fragment(), 0..40),
                cuts in prop::collection::vec(1usize..9, 1..20),
                max in 8usize..400,
            ) {
                let body: Vec<u8> = parts.concat().into_bytes();
                let mut pieces = Vec::new();
                let mut rest = &body[..];
                for cut in cuts.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let at = (*cut).min(rest.len());
                    pieces.push(rest[..at].to_vec());
                    rest = &rest[at..];
                }
                let got = ours(&pieces, max);
                // The crate panics on a body that starts with a byte-order
                // mark (it slices one byte into the mark's three). The
                // standard drops one mark; the reference reads the body
                // without it, after a blank line (which does nothing) so
                // that a second mark is read as a character, as ours does.
                let expected = match body.strip_prefix("\u{feff}".as_bytes()) {
                    Some(rest) => reference(&[b"\n", rest].concat()),
                    None => reference(&body),
                };
                if EventCap::new(max).take(&body).is_ok() {
                    prop_assert_eq!(got, expected);
                } else {
                    // Past a cap: what came before agrees, then the
                    // refusal; or both stopped before it mattered.
                    match got.split_last() {
                        Some((last, before)) if last == "over the cap" => {
                            prop_assert!(expected.starts_with(before), "{before:?} vs {expected:?}");
                        }
                        _ => prop_assert_eq!(got, expected),
                    }
                }
            }
        }
    }
}
