//! Server-sent events out of a provider's body, by the HTML standard's
//! rules as `eventsource-stream` (the decoder async-openai uses) applies
//! them: lines end at CRLF, CR or LF; a leading byte-order mark is
//! dropped; `:` starts a comment; `data` lines join with LF; a blank line
//! ends the event, and an event with no data is not one.
//!
//! Written here, not taken from that crate, because a measurement asked
//! for it (docs/BENCHMARKS.md, "S1 against its floor"): its parser copies
//! the rest of its buffer after every line and tries three grammars per
//! line, and with its UTF-8 layer it was 16% of the server's instructions
//! per token in S1. This one scans each byte once, keeps what it has not
//! read in one buffer, and checks UTF-8 a whole line at a time: a line
//! that is not UTF-8 ends the stream there, where the crate would keep
//! every later byte buffered until the body ended. `decode.rs` tests it
//! against the crate on adversarial bodies cut anywhere.

/// The UTF-8 byte-order mark.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A line of the body is not UTF-8.
#[derive(Debug, PartialEq)]
pub struct NotUtf8;

/// An event: its type (`message` unless an `event` line named another)
/// and its data.
#[derive(Debug, PartialEq)]
pub struct Event<'a> {
    pub kind: &'a str,
    pub data: &'a str,
}

/// The decoder's state between the body's pieces. Bounded by what it is
/// fed: after [`SseDecoder::next`] says no event is ready, `buf` holds one
/// unfinished line, and `data` one unfinished event's data (the caller
/// caps both: `decode::EventCap`).
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// Bytes received, read up to `at`.
    buf: Vec<u8>,
    at: usize,
    /// Where to look for the next line end: the bytes between `at` and
    /// here hold none, so a long line arriving in small pieces is scanned
    /// once, not once per piece.
    scanned: usize,
    /// Whether the start of the body was looked at for a byte-order mark.
    started: bool,
    /// The event being read.
    kind: String,
    data: String,
    /// The event [`SseDecoder::next`] last completed.
    ready_kind: String,
    ready_data: String,
}

impl SseDecoder {
    /// The next bytes of the body.
    /// Called once [`SseDecoder::next`] said no event is ready, when
    /// `buf` holds only the unfinished line.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Reads lines until an event is complete (true: see
    /// [`SseDecoder::event`]) or the bytes fed so far run out (false).
    pub fn next(&mut self) -> Result<bool, NotUtf8> {
        if !self.started {
            let rest = &self.buf[self.at..];
            if rest.len() < BOM.len() && BOM.starts_with(rest) {
                return Ok(false); // too few bytes to tell
            }
            self.started = true;
            if rest.starts_with(BOM) {
                self.at += BOM.len();
            }
        }
        loop {
            let (end, next) = match line_end(&self.buf, self.scanned.max(self.at)) {
                Ok(found) => found,
                Err(resume) => {
                    self.scanned = resume;
                    break;
                }
            };
            let line = std::str::from_utf8(&self.buf[self.at..end]).map_err(|_| NotUtf8)?;
            self.at = next;
            if line.is_empty() {
                if self.data.is_empty() {
                    self.kind.clear(); // no data: no event
                    continue;
                }
                self.data.pop(); // the LF after the last data line
                std::mem::swap(&mut self.data, &mut self.ready_data);
                std::mem::swap(&mut self.kind, &mut self.ready_kind);
                self.data.clear();
                self.kind.clear();
                if self.ready_kind.is_empty() {
                    self.ready_kind.push_str("message");
                }
                return Ok(true);
            }
            if line.starts_with(':') {
                continue; // a comment
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            match field {
                "data" => {
                    self.data.push_str(value);
                    self.data.push('\n');
                }
                "event" => {
                    self.kind.clear();
                    self.kind.push_str(value);
                }
                _ => {} // `id` and `retry` mean nothing to a completion
            }
        }
        // What is left is one unfinished line: keep only it.
        self.buf.drain(..self.at);
        self.scanned -= self.at;
        self.at = 0;
        Ok(false)
    }

    /// The event [`SseDecoder::next`] last completed.
    pub fn event(&self) -> Event<'_> {
        Event {
            kind: &self.ready_kind,
            data: &self.ready_data,
        }
    }

    /// The body ended: an unfinished last line is dropped (as the
    /// standard says), but it must still have been UTF-8.
    pub fn finish(&self) -> Result<(), NotUtf8> {
        std::str::from_utf8(&self.buf[self.at..])
            .map(|_| ())
            .map_err(|_| NotUtf8)
    }
}

/// Where the line whose end is first found at or after `from` ends, and
/// where the next begins; else where to look again once more bytes came.
/// A CR last in `buf` is not an end yet: the LF of a CRLF may follow.
fn line_end(buf: &[u8], from: usize) -> Result<(usize, usize), usize> {
    let Some(found) = memchr::memchr2(b'\n', b'\r', &buf[from..]) else {
        return Err(buf.len());
    };
    let end = from + found;
    match (buf[end], buf.get(end + 1)) {
        (b'\n', _) => Ok((end, end + 1)),
        (_, Some(b'\n')) => Ok((end, end + 2)),
        (_, Some(_)) => Ok((end, end + 1)),
        (_, None) => Err(end),
    }
}

#[cfg(test)]
mod tests {
    use super::{NotUtf8, SseDecoder};

    /// Every event of `pieces` fed in turn, as (type, data).
    fn events(pieces: &[&[u8]]) -> Result<Vec<(String, String)>, NotUtf8> {
        let mut sse = SseDecoder::default();
        let mut out = Vec::new();
        for piece in pieces {
            sse.feed(piece);
            while sse.next()? {
                let e = sse.event();
                out.push((e.kind.to_owned(), e.data.to_owned()));
            }
        }
        sse.finish()?;
        Ok(out)
    }

    fn message(data: &str) -> (String, String) {
        ("message".into(), data.into())
    }

    #[test]
    fn the_standards_examples() {
        let body = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\n\
                     data:  third event\n\ndata\n\ndata\ndata\n\ndata:\n";
        assert_eq!(
            events(&[body]).unwrap(),
            vec![
                message("first event"),
                message("second event"),
                message(" third event"),
                message(""),
                message("\n"),
            ]
        );
        let body = b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\n";
        assert_eq!(
            events(&[body]).unwrap(),
            vec![
                ("add".into(), "73857293".into()),
                ("remove".into(), "2153".into())
            ]
        );
    }

    #[test]
    fn line_ends_and_a_byte_order_mark_split_anywhere() {
        let body = "\u{feff}data: a\r\ndata: b\r\revent: x\rdata: c\n\n\u{feff}data: é\r\n\r\n";
        // A mark inside the body is a character of its line, not dropped:
        // the last line is a field named "\u{feff}data", so no event.
        let expected = vec![message("a\nb"), ("x".into(), "c".into())];
        let bytes = body.as_bytes();
        assert_eq!(events(&[bytes]).unwrap(), expected);
        for cut in 0..=bytes.len() {
            assert_eq!(
                events(&[&bytes[..cut], &bytes[cut..]]).unwrap(),
                expected,
                "cut at {cut}"
            );
        }
        let one_at_a_time: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(events(&one_at_a_time).unwrap(), expected);
    }

    #[test]
    fn a_cr_last_waits_for_what_follows_and_an_unfinished_event_is_dropped() {
        let mut sse = SseDecoder::default();
        sse.feed(b"data: a\n\r");
        assert_eq!(sse.next(), Ok(false), "the CR may be the start of CRLF");
        sse.feed(b"\ndata: b\n");
        assert_eq!(sse.next(), Ok(true));
        assert_eq!(sse.event().data, "a");
        assert_eq!(sse.next(), Ok(false));
        assert_eq!(sse.finish(), Ok(()), "data: b never ended; nothing more");
    }

    #[test]
    fn a_line_that_is_not_utf8_ends_the_stream_and_nothing_after_it_is_kept() {
        let mut sse = SseDecoder::default();
        sse.feed(b"data: a\n\ndata: \xff\n\ndata: b\n\n");
        assert_eq!(sse.next(), Ok(true));
        assert_eq!(sse.event().data, "a");
        assert_eq!(sse.next(), Err(NotUtf8));
        // Half a character at the very end is not UTF-8 either.
        assert_eq!(events(&[b"data: a\n\n\xc3"]), Err(NotUtf8));
        assert_eq!(
            events(&[b"data: \xc3", b"\xa9\n\n"]).unwrap(),
            vec![message("é")]
        );
    }

    #[test]
    fn a_long_line_in_small_pieces_is_scanned_once() {
        let mut sse = SseDecoder::default();
        sse.feed(b"data: ");
        for _ in 0..1000 {
            sse.feed(b"x");
            assert_eq!(sse.next(), Ok(false));
            assert_eq!(
                sse.scanned,
                sse.buf.len(),
                "nothing before here is read again"
            );
        }
        sse.feed(b"\r");
        assert_eq!(sse.next(), Ok(false));
        assert_eq!(sse.scanned, sse.buf.len() - 1, "the CR is looked at again");
        sse.feed(b"\n\n");
        assert_eq!(sse.next(), Ok(true));
        assert_eq!(sse.event().data.len(), 1000);
    }

    #[test]
    fn what_it_holds_is_one_unfinished_line() {
        let mut sse = SseDecoder::default();
        for _ in 0..10_000 {
            sse.feed(b"data: 0123456789\n\ndata: 01");
            while sse.next().unwrap() {}
            sse.feed(b"23456789\n\n");
            while sse.next().unwrap() {}
        }
        assert!(sse.buf.capacity() < 256, "{}", sse.buf.capacity());
        assert!(sse.data.capacity() < 256);
    }
}
