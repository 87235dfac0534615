//! Open event streams end when what let them open does: their session, or
//! their membership of a private thread. A subscription registers each
//! under a key ([`Watch::watch`]: a session's token hash, a thread and
//! member); a task checks the watched keys against the database every
//! `revalidate_secs` and ends the streams of those gone (a session signed
//! out, expired or of a disabled account; a member removed). The database
//! is the one truth, so a change on any instance ends the streams on every
//! instance within that period.
//!
//! Memory: one entry per watched key, removed with its last stream.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

#[derive(Clone, Default)]
pub struct Watch {
    /// Key -> its end and how many streams hold it.
    sessions: Arc<Mutex<HashMap<String, (CancellationToken, usize)>>>,
}

/// One stream's hold on a watched key; dropping it lets go.
pub struct Watching {
    hash: String,
    ended: CancellationToken,
    sessions: Arc<Mutex<HashMap<String, (CancellationToken, usize)>>>,
}

impl Watch {
    pub fn watch(&self, token_hash: &str) -> Watching {
        let mut sessions = self.sessions.lock().expect("watched keys");
        let (ended, holders) = sessions.entry(token_hash.to_owned()).or_default();
        *holders += 1;
        Watching {
            hash: token_hash.to_owned(),
            ended: ended.clone(),
            sessions: self.sessions.clone(),
        }
    }

    /// The keys some stream holds now.
    pub fn watched(&self) -> Vec<String> {
        let sessions = self.sessions.lock().expect("watched keys");
        sessions.keys().cloned().collect()
    }

    /// Ends the streams of every key in `checked` that is not in `live`;
    /// how many keys ended.
    pub fn end_all_but(&self, checked: &[String], live: &HashSet<String>) -> usize {
        let sessions = self.sessions.lock().expect("watched keys");
        let mut ended = 0;
        for hash in checked.iter().filter(|h| !live.contains(*h)) {
            if let Some((token, _)) = sessions.get(hash) {
                if !token.is_cancelled() {
                    token.cancel();
                    ended += 1;
                }
            }
        }
        ended
    }
}

impl Watching {
    /// Resolves when the key has ended.
    pub fn ended(&self) -> WaitForCancellationFutureOwned {
        self.ended.clone().cancelled_owned()
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let mut sessions = self.sessions.lock().expect("watched keys");
        if let Some((_, holders)) = sessions.get_mut(&self.hash) {
            *holders -= 1;
            if *holders == 0 {
                sessions.remove(&self.hash);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_ended_session_ends_its_streams_and_entries_go_with_the_last() {
        let watch = Watch::default();
        let a1 = watch.watch("a");
        let a2 = watch.watch("a");
        let b = watch.watch("b");
        let mut checked = watch.watched();
        checked.sort();
        assert_eq!(checked, ["a", "b"]);
        let live: HashSet<String> = ["b".to_owned()].into();
        assert_eq!(watch.end_all_but(&checked, &live), 1);
        a1.ended().await;
        a2.ended().await;
        assert!(!b.ended.is_cancelled());
        drop((a1, a2));
        assert_eq!(watch.watched(), ["b"]);
        drop(b);
        assert!(watch.watched().is_empty());
    }
}
