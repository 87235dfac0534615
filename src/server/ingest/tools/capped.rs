//! A stdio MCP server's output, capped per line as it is read: a line (one
//! JSON-RPC message) longer than the cap ends the stream with an error at
//! once, so a hostile server can neither make us hold it nor keep a core
//! busy discarding it until the call's timeout.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, ReadBuf};

pub struct CappedLines<R> {
    inner: R,
    max: usize,
    /// Bytes of the line being read (since the last newline).
    line: usize,
    /// Set (and kept) once a line passed `max`.
    tripped: Arc<AtomicBool>,
}

impl<R> CappedLines<R> {
    pub fn new(inner: R, max: usize, tripped: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            max,
            line: 0,
            tripped,
        }
    }

    /// Counts `bytes` into the current line; false once it passed `max`.
    fn take(&mut self, bytes: &[u8]) -> bool {
        match bytes.iter().rposition(|b| *b == b'\n') {
            Some(last) => {
                // Every line ended here must fit too.
                let mut line = self.line;
                for piece in bytes[..last].split(|b| *b == b'\n') {
                    if line + piece.len() > self.max {
                        return false;
                    }
                    line = 0;
                }
                self.line = bytes.len() - last - 1;
            }
            None => self.line += bytes.len(),
        }
        self.line <= self.max
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for CappedLines<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.tripped.load(Ordering::Relaxed) {
            return Poll::Ready(Err(too_long(this.max)));
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            if !this.take(&buf.filled()[before..]) {
                this.tripped.store(true, Ordering::Relaxed);
                buf.set_filled(before);
                return Poll::Ready(Err(too_long(this.max)));
            }
        }
        result
    }
}

fn too_long(max: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("a message longer than {max} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn capped(max: usize) -> CappedLines<tokio::io::Empty> {
        CappedLines::new(tokio::io::empty(), max, Arc::default())
    }

    #[test]
    fn lines_up_to_the_cap_pass_longer_ones_trip() {
        let mut c = capped(4);
        assert!(c.take(b"abcd\nab"));
        assert!(c.take(b"cd\n\nabcd"));
        assert!(!c.take(b"e"));
        let mut c = capped(4);
        assert!(!c.take(b"ab\nabcde\nab"), "a long line in the middle");
    }

    proptest! {
        /// However the output is cut into reads, the cap trips exactly when
        /// some line is longer than it.
        #[test]
        fn the_split_never_matters(
            body in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'x')], 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..12),
            max in 0usize..20,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c <= body.len()).collect();
            cuts.sort();
            cuts.push(body.len());
            let mut c = capped(max);
            let (mut at, mut ok) = (0, true);
            for cut in cuts {
                ok = c.take(&body[at..cut]);
                at = cut;
                if !ok {
                    break;
                }
            }
            let longest = body.split(|b| *b == b'\n').map(<[u8]>::len).max().unwrap_or(0);
            prop_assert_eq!(ok, longest <= max);
        }
    }
}
