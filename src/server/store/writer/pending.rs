//! A batch's streamed text before it is written: appends to one part of
//! one reply are merged into one log row, in the order they came, until
//! something else in the batch touches that reply.

use std::sync::Arc;

use tokio::time::Instant;

use crate::model::Part;
use crate::server::store::{LogAppend, LogCursor};

/// Appends to one part of a reply merged within a batch.
#[derive(Debug)]
pub struct PendingAppend {
    pub thread_id: Arc<str>,
    pub id: i64,
    pub part: Part,
    pub text: String,
    /// When the provider sent its oldest text (for metrics).
    pub received: Instant,
}

/// Text waiting in a batch, merged per reply and part.
#[derive(Debug, Default)]
pub struct Pending(Vec<PendingAppend>);

impl Pending {
    /// Adds an append, merged with an earlier one to the same part of the
    /// same reply.
    pub fn merge(
        &mut self,
        thread_id: &Arc<str>,
        id: i64,
        part: Part,
        text: &str,
        received: Instant,
    ) {
        match self.0.iter_mut().find(|p| p.id == id && p.part == part) {
            Some(p) => p.text.push_str(text),
            None => self.0.push(PendingAppend {
                thread_id: thread_id.clone(),
                id,
                part,
                text: text.to_owned(),
                received,
            }),
        }
    }

    /// Takes reply `id`'s appends (both parts), in batch order.
    pub fn take(&mut self, id: i64) -> Vec<PendingAppend> {
        let (taken, kept) = std::mem::take(&mut self.0)
            .into_iter()
            .partition(|p| p.id == id);
        self.0 = kept;
        taken
    }

    /// Drops reply `id`'s appends.
    pub fn drop_reply(&mut self, id: i64) {
        self.0.retain(|p| p.id != id);
    }

    /// Everything left, in batch order.
    pub fn into_appends(self) -> Vec<PendingAppend> {
        self.0
    }
}

/// An append placed in its reply's log: the cursor before it and its
/// revision.
pub type Placed = (PendingAppend, LogCursor, i64);

/// The log rows of placed appends.
pub fn log_rows(rows: &[Placed]) -> Vec<LogAppend<'_>> {
    rows.iter()
        .map(|(a, cursor, rev)| LogAppend {
            thread_id: &a.thread_id,
            id: a.id,
            part: a.part,
            seq: cursor.next_seq,
            offset: cursor.len(a.part),
            rev: *rev,
            text: &a.text,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_merge_per_reply_and_part_in_order() {
        let thread: Arc<str> = "lobby".into();
        let at = Instant::now();
        let mut pending = Pending::default();
        pending.merge(&thread, 1, Part::Answer, "Hel", at);
        pending.merge(&thread, 2, Part::Answer, "x", at);
        pending.merge(&thread, 1, Part::Thinking, "hm", at);
        pending.merge(&thread, 1, Part::Answer, "lo", at);
        let one = pending.take(1);
        assert_eq!(one.len(), 2);
        assert_eq!((one[0].part, one[0].text.as_str()), (Part::Answer, "Hello"));
        assert_eq!((one[1].part, one[1].text.as_str()), (Part::Thinking, "hm"));
        assert!(pending.take(1).is_empty());
        pending.drop_reply(2);
        assert!(pending.into_appends().is_empty());
    }

    #[test]
    fn a_row_starts_where_its_reply_log_stood() {
        let at = Instant::now();
        let cursor = LogCursor::default().after(Part::Answer, 4);
        let placed = vec![(
            PendingAppend {
                thread_id: "t".into(),
                id: 9,
                part: Part::Answer,
                text: "more".into(),
                received: at,
            },
            cursor,
            42,
        )];
        let rows = log_rows(&placed);
        assert_eq!(
            (rows[0].seq, rows[0].offset, rows[0].rev, rows[0].text),
            (1, 4, 42, "more")
        );
    }
}
