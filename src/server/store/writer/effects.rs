//! What a batch will do once committed: the events to publish (in
//! revision order), one answer per command (in batch order: each goes to
//! its own caller's channel), and the changes to the writer's replies.

use std::sync::Arc;

use tokio::time::Instant;

use super::{
    pending::{PendingAppend, Placed},
    replies::{Changes, Log},
    Adopted,
};
use crate::{
    error::AppError,
    model::{ChatEvent, Message, Posted},
};

/// A command's answer, given to its caller once the batch committed.
#[derive(Debug)]
pub enum Answer {
    /// Nobody waits (text, ends, notices, renewals).
    Nothing,
    Posted(Result<Posted, AppError>),
    Restarted(Result<Message, AppError>),
    Adopted(Option<Adopted>),
    /// Everything queued before the ping is committed.
    Pong,
}

/// See the module's documentation.
#[derive(Debug, Default)]
pub struct Effects {
    events: Vec<(Arc<str>, i64, ChatEvent)>,
    answers: Vec<Answer>,
    changes: Changes,
    /// Wake-ups the commit sent to other instances.
    notifications: u64,
    /// When the provider sent each published delta's oldest text.
    received: Vec<Instant>,
}

/// A committed batch's effects, taken apart to be carried out.
pub struct Settled {
    pub events: Vec<(Arc<str>, i64, ChatEvent)>,
    pub answers: Vec<Answer>,
    pub changes: Changes,
    pub notifications: u64,
    pub received: Vec<Instant>,
}

impl Effects {
    /// The next command's answer (one per command, in batch order).
    pub fn answer(&mut self, answer: Answer) {
        self.answers.push(answer);
    }

    pub fn event(&mut self, thread_id: Arc<str>, rev: i64, event: ChatEvent) {
        self.events.push((thread_id, rev, event));
    }

    /// Publishes a message row as it now stands.
    pub fn message(&mut self, rev: i64, message: &Message) {
        self.event(
            message.thread_id.as_str().into(),
            rev,
            ChatEvent::Message {
                message: message.clone(),
            },
        );
    }

    /// Records appended log rows as deltas, and each reply's log after them.
    pub fn appended(&mut self, rows: Vec<Placed>) {
        for (append, cursor, rev) in rows {
            let PendingAppend {
                thread_id,
                id,
                part,
                text,
                received,
            } = append;
            self.changes
                .log(id, Log::At(cursor.after(part, text.len())));
            self.received.push(received);
            self.event(
                thread_id,
                rev,
                ChatEvent::Delta {
                    id,
                    part,
                    offset: cursor.len(part),
                    text,
                },
            );
        }
    }

    /// The changes to the writer's replies.
    pub fn changes(&mut self) -> &mut Changes {
        &mut self.changes
    }

    /// Where reply `id`'s log stands in this batch, if the batch moved it.
    pub fn log_of(&self, id: i64) -> Option<Log> {
        self.changes.log_of(id)
    }

    pub fn committed(&mut self, notifications: u64) {
        self.notifications = notifications;
    }

    /// Whether someone asked whether the writer commits.
    pub fn pinged(&self) -> bool {
        self.answers.iter().any(|a| matches!(a, Answer::Pong))
    }

    pub fn settle(self) -> Settled {
        Settled {
            events: self.events,
            answers: self.answers,
            changes: self.changes,
            notifications: self.notifications,
            received: self.received,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Part;
    use crate::server::store::LogCursor;

    #[test]
    fn appended_text_becomes_deltas_at_its_offsets_and_moves_the_log() {
        let mut effects = Effects::default();
        let before = LogCursor::default().after(Part::Answer, 3);
        let append = |text: &str| PendingAppend {
            thread_id: "t".into(),
            id: 5,
            part: Part::Answer,
            text: text.into(),
            received: Instant::now(),
        };
        effects.appended(vec![(append("abc"), before, 10)]);
        effects.answer(Answer::Nothing);
        assert_eq!(
            effects.log_of(5),
            Some(Log::At(before.after(Part::Answer, 3)))
        );
        let settled = effects.settle();
        assert_eq!(settled.answers.len(), 1);
        assert_eq!(settled.received.len(), 1);
        match &settled.events[..] {
            [(
                thread,
                10,
                ChatEvent::Delta {
                    id: 5,
                    offset: 3,
                    text,
                    ..
                },
            )] => {
                assert_eq!((&**thread, text.as_str()), ("t", "abc"));
            }
            other => panic!("{other:?}"),
        }
    }
}
