//! Keeps home pages' thread lists live: when a thread's entry changes (a
//! message, a reply ending, a rename), its summary is read once and sent to
//! every list subscriber (unlisted threads never are). One task does the reads in turn, so an entry's
//! last event always carries its latest state; nothing is read while no one
//! watches the list (see [`Hub::thread_changed`]).

use crate::model::ChatEvent;
use crate::server::{fanout::hub::Hub, store::Store, Background};

pub fn spawn(store: Store, hub: Hub, background: &Background) {
    let shutdown = background.stop.clone();
    background.spawn(async move {
        loop {
            let changed = tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = hub.changed_threads() => changed,
            };
            for id in changed {
                match store.listed_summary(&id).await {
                    Ok(Some(thread)) => hub.publish_index(ChatEvent::Thread { thread }),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(thread_id = %id, error = %e, "thread summary failed"),
                }
            }
        }
    });
}
