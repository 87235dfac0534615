//! A started stream's body: its lines capped as they arrive, and its SSE
//! events decoded on the reply's own task (see `provider.rs`).

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use async_openai::error::OpenAIError;

use super::provider::{without_url, Chunk, ChunkStream};

/// A started stream's chunks, decoded as the reply's task reads them: SSE
/// events by `eventsource-stream`, each event's data as a [`Chunk`];
/// `[DONE]` or the end of the body ends it, `keepalive` events are skipped,
/// and the first error is its last item (as async-openai's stream does).
pub(super) fn decode(response: reqwest::Response) -> ChunkStream {
    use eventsource_stream::Eventsource;
    use futures::StreamExt;
    let events = response
        .bytes_stream()
        .map(|r| r.map_err(std::io::Error::other))
        .eventsource();
    Box::pin(futures::stream::unfold(Some(events), |events| async move {
        let mut events = events?;
        loop {
            let event = match events.next().await? {
                Ok(event) => event,
                Err(e) => {
                    let error = async_openai::error::StreamError::EventStream(e.to_string());
                    return Some((Err(OpenAIError::StreamError(Box::new(error))), None));
                }
            };
            if event.data == "[DONE]" {
                return None;
            }
            if event.event == "keepalive" {
                continue;
            }
            return Some((
                serde_json::from_str::<Chunk>(&event.data)
                    .map_err(|e| OpenAIError::JSONDeserialize(e, event.data)),
                Some(events),
            ));
        }
    }))
}

/// The response with its body failing (and `oversized` set: 1 for a line,
/// 2 for an event) once a line (bytes between two
/// newlines) grows past `max`, or an event (its lines up to a blank line)
/// past `max` in all: the SSE parser above buffers a line until it ends and
/// an event's data until the blank line, so an endless line, or endless
/// `data:` lines with no blank line, would grow its buffers without bound.
pub(super) fn cap_lines(
    response: reqwest::Response,
    max: usize,
    oversized: Option<Arc<AtomicUsize>>,
) -> reqwest::Response {
    use futures::StreamExt;
    let mut builder = axum::http::Response::builder()
        .status(response.status())
        .version(response.version());
    if let Some(headers) = builder.headers_mut() {
        *headers = response.headers().clone();
    }
    let mut cap = EventCap::new(max);
    let body = response.bytes_stream().map(move |chunk| {
        let chunk = chunk.map_err(|e| LineError(without_url(&e)))?;
        if let Err(what) = cap.take(&chunk) {
            if let Some(over) = &oversized {
                over.store(if what == OVER_EVENT { 2 } else { 1 }, Ordering::Relaxed);
            }
            return Err(LineError(format!(
                "{what} of the provider's stream is longer than {max} bytes"
            )));
        }
        Ok(chunk)
    });
    match builder.body(reqwest::Body::wrap_stream(body)) {
        Ok(response) => reqwest::Response::from(response),
        Err(_) => reqwest::Response::from(axum::http::Response::new(reqwest::Body::from(""))),
    }
}

/// What [`EventCap`] found too long.
pub(super) const OVER_LINE: &str = "a line";
pub(super) const OVER_EVENT: &str = "an event";

/// Counts an SSE body's bytes per line and per event as they pass.
#[derive(Debug)]
pub(super) struct EventCap {
    max: usize,
    /// Bytes of the line being read (without its newline).
    line: usize,
    /// Whether that line so far is only a `\r` (a CRLF blank line).
    line_is_cr: bool,
    /// Bytes of the event's finished lines (with their newlines).
    event: usize,
}

impl EventCap {
    pub(super) fn new(max: usize) -> Self {
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
    pub(super) fn take(&mut self, mut bytes: &[u8]) -> Result<(), &'static str> {
        loop {
            let (piece, ended) = match bytes.iter().position(|b| *b == b'\n') {
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
}

#[derive(Debug)]
struct LineError(String);

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LineError {}
