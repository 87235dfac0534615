//! What the writer knows of the replies streaming here: one owner for all
//! of it. Only the writer's task holds a [`Replies`]; it changes when a
//! batch commits ([`Replies::settle`]) and when a reply is given up (its
//! claim lost, or its text refused). Everything here is committed state:
//! a batch that does not commit changes nothing.

use std::collections::HashMap;

use crate::server::store::LogCursor;

/// Where a reply's log stands after a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Log {
    /// It streams here: the next delta's offset and log row.
    At(LogCursor),
    /// It does not stream here any more: ended, handed over, taken over.
    Closed,
}

/// This instance's claim on a reply after a commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Held, at this epoch (coordination's fencing token).
    Held(i64),
    /// Given up (ended or handed over).
    Released,
}

/// What one commit changed for the replies it wrote.
#[derive(Debug, Default)]
pub struct Changes {
    logs: HashMap<i64, Log>,
    claims: HashMap<i64, Claim>,
    /// Replies whose producer's end (or hand-over) the commit recorded.
    ended: Vec<i64>,
}

impl Changes {
    pub fn log(&mut self, id: i64, log: Log) {
        self.logs.insert(id, log);
    }

    pub fn claim(&mut self, id: i64, claim: Claim) {
        self.claims.insert(id, claim);
    }

    pub fn ended(&mut self, id: i64) {
        self.ended.push(id);
    }

    /// Where reply `id`'s log stands in this batch, if the batch moved it.
    pub fn log_of(&self, id: i64) -> Option<Log> {
        self.logs.get(&id).copied()
    }
}

#[derive(Debug, Default)]
struct LiveReply {
    log: Option<LogCursor>,
    epoch: Option<i64>,
    /// Another instance took its claim: nothing more of it is written
    /// (until its producer's end arrives).
    lost: bool,
    /// An append of it could not be stored: later appends are dropped (a
    /// reply never continues past a hole) and its end is recorded `failed`.
    broken: bool,
}

impl LiveReply {
    fn is_known(&self) -> bool {
        self.log.is_some() || self.epoch.is_some() || self.lost || self.broken
    }
}

/// See the module's documentation.
#[derive(Debug, Default)]
pub struct Replies {
    live: HashMap<i64, LiveReply>,
}

impl Replies {
    /// Where reply `id`'s log stands, if it streams here.
    pub fn cursor(&self, id: i64) -> Option<LogCursor> {
        self.live.get(&id).and_then(|r| r.log)
    }

    /// The epoch of the claim this instance holds on reply `id`.
    pub fn epoch(&self, id: i64) -> Option<i64> {
        self.live.get(&id).and_then(|r| r.epoch)
    }

    pub fn is_lost(&self, id: i64) -> bool {
        self.live.get(&id).is_some_and(|r| r.lost)
    }

    pub fn is_broken(&self, id: i64) -> bool {
        self.live.get(&id).is_some_and(|r| r.broken)
    }

    /// Every claim held, with its epoch (to renew).
    pub fn held(&self) -> Vec<(i64, i64)> {
        self.live
            .iter()
            .filter_map(|(id, r)| Some((*id, r.epoch?)))
            .collect()
    }

    /// Gives up reply `id`, whose claim another instance holds now; true
    /// the first time (its producer is then told to stop).
    pub fn lose(&mut self, id: i64) -> bool {
        let reply = self.live.entry(id).or_default();
        reply.epoch = None;
        reply.log = None;
        !std::mem::replace(&mut reply.lost, true)
    }

    /// Reply `id`'s text could not be stored; true the first time (its
    /// producer is then told to end it).
    pub fn break_off(&mut self, id: i64) -> bool {
        !std::mem::replace(&mut self.live.entry(id).or_default().broken, true)
    }

    /// A commit's changes. A producer's end clears its flags first (a
    /// Continue in the same batch streams it again, with the log and claim
    /// set after); a claim taken clears `lost`; a reply nothing is known of
    /// any more is forgotten.
    pub fn settle(&mut self, changes: Changes) {
        for id in changes.ended {
            if let Some(reply) = self.live.get_mut(&id) {
                reply.lost = false;
                reply.broken = false;
            }
        }
        for (id, log) in changes.logs {
            self.live.entry(id).or_default().log = match log {
                Log::At(cursor) => Some(cursor),
                Log::Closed => None,
            };
        }
        for (id, claim) in changes.claims {
            let reply = self.live.entry(id).or_default();
            reply.epoch = match claim {
                Claim::Held(epoch) => {
                    reply.lost = false;
                    Some(epoch)
                }
                Claim::Released => None,
            };
        }
        self.live.retain(|_, r| r.is_known());
    }

    /// How many replies the writer knows of (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Part;

    fn streaming(id: i64, epoch: i64) -> Changes {
        let mut changes = Changes::default();
        changes.log(id, Log::At(LogCursor::default()));
        changes.claim(id, Claim::Held(epoch));
        changes
    }

    #[test]
    fn a_reply_streams_from_its_insert_to_its_end_and_is_forgotten() {
        let mut replies = Replies::default();
        replies.settle(streaming(7, 3));
        assert_eq!(replies.cursor(7), Some(LogCursor::default()));
        assert_eq!(replies.held(), vec![(7, 3)]);
        let mut appended = Changes::default();
        appended.log(7, Log::At(LogCursor::default().after(Part::Answer, 5)));
        replies.settle(appended);
        assert_eq!(replies.cursor(7).unwrap().len(Part::Answer), 5);
        let mut ended = Changes::default();
        ended.log(7, Log::Closed);
        ended.claim(7, Claim::Released);
        ended.ended(7);
        replies.settle(ended);
        assert_eq!(replies.cursor(7), None);
        assert!(replies.held().is_empty());
        assert_eq!(replies.len(), 0, "nothing is kept of an ended reply");
    }

    #[test]
    fn a_lost_reply_is_written_no_more_until_its_end_arrives() {
        let mut replies = Replies::default();
        replies.settle(streaming(1, 1));
        assert!(replies.lose(1), "the first loss tells the producer");
        assert!(!replies.lose(1), "only once");
        assert!(replies.is_lost(1));
        assert_eq!(replies.cursor(1), None);
        assert!(replies.held().is_empty());
        // Its producer's end clears the flag; nothing is left.
        let mut ended = Changes::default();
        ended.ended(1);
        replies.settle(ended);
        assert!(!replies.is_lost(1));
        assert_eq!(replies.len(), 0);
    }

    #[test]
    fn an_end_and_a_continue_in_one_batch_leave_the_reply_streaming() {
        let mut replies = Replies::default();
        replies.settle(streaming(4, 1));
        assert!(replies.break_off(4));
        assert!(!replies.break_off(4));
        let mut changes = streaming(4, 2);
        changes.ended(4);
        replies.settle(changes);
        assert!(!replies.is_broken(4), "the end clears the hole");
        assert_eq!(replies.epoch(4), Some(2), "the Continue's claim stands");
    }
}
