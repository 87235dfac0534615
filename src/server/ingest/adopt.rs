//! Several instances: taking over replies whose producer died.
//!
//! An instance generating a reply holds a lease on it and renews it every
//! third of its term. Coordination looks for streaming replies whose lease
//! ran out (their instance was killed, or paused past it) and hands each
//! to [`orphan`], which takes it over through the writer (a new epoch: anything the old
//! producer still tries to write is refused). Then, as configured, it
//! continues the reply from its stored text (the Continue path, with a
//! notice that it was resumed), or ends it `interrupted`. A reply someone
//! pressed Stop on meanwhile ends `cancelled`.

use super::{generate, Ingest};
use crate::model::{Outcome, ReplyStats, Status};
use crate::server::{config::OrphanedReplies, store::writer::Adopted};

/// Takes over reply `id` of `thread_id`, whose producer's lease ran out,
/// if no one else did first. False once shutdown began (no adoption
/// starts then).
pub async fn orphan(state: &Ingest, thread_id: String, id: i64) -> bool {
    // Shutdown waits for an adoption under way; none starts after it.
    let Some(_busy) = state.generations.busy() else {
        return false;
    };
    // This instance's own producer of it, paused past its lease, is still
    // winding down: let another instance take it.
    if state.generations.is_running(id) {
        return true;
    }
    match state.writer.adopt(&thread_id, id).await {
        Ok(Some(adopted)) => take_over(state, adopted).await,
        Ok(None) => {} // renewed, ended, or another instance was first
        Err(e) => tracing::warn!(message_id = id, error = %e, "could not adopt a reply"),
    }
    true
}

async fn take_over(state: &Ingest, adopted: Adopted) {
    let Adopted {
        message,
        stop_requested_by,
    } = adopted;
    let id = message.id;
    let thread_id: std::sync::Arc<str> = message.thread_id.as_str().into();
    let end = |status, error: String, stopped_by| Outcome {
        status,
        error: Some(error),
        finish_reason: None,
        stopped_by,
        stats: ReplyStats::default(),
    };
    let outcome = if let Some(by) = stop_requested_by {
        Some(end(
            Status::Cancelled,
            format!("Stopped by {by}."),
            Some(by),
        ))
    } else if state.config.cluster.orphaned_replies == OrphanedReplies::Interrupt {
        Some(end(
            Status::Interrupted,
            "The server writing this reply stopped.".into(),
            None,
        ))
    } else {
        match state.generations.reserve(None) {
            Ok(slot) => {
                tracing::warn!(
                    message_id = id,
                    "adopted a reply whose server stopped; continuing it"
                );
                let handle = state.generations.register(id, slot);
                generate::spawn(state.clone(), message, handle, true);
                None
            }
            Err(_) if state.generations.is_closed() => {
                // Adopted as this instance stops: handed straight back (its
                // lease released), so another instance takes it now, not
                // when the lease expires.
                tracing::info!(
                    message_id = id,
                    "shutting down: handing an adopted reply back"
                );
                if let Err(e) = state.writer.release(&thread_id, id).await {
                    tracing::error!(message_id = id, error = %e, "could not hand an adopted reply back");
                }
                None
            }
            Err(_) => Some(end(
                Status::Interrupted,
                "The server writing this reply stopped, and the one taking it over is at its \
                 limit of replies."
                    .into(),
                None,
            )),
        }
    };
    if let Some(outcome) = outcome {
        tracing::warn!(
            message_id = id,
            status = outcome.status.as_str(),
            "adopted a reply whose server stopped; ending it"
        );
        if let Err(e) = state.writer.finish(&thread_id, id, outcome).await {
            tracing::error!(message_id = id, error = %e, "could not end an adopted reply");
        }
    }
}
