//! Decisions on tool calls that wait for approval. Whoever may approve
//! (the person who asked, or anyone in the thread: `tools.approver`) does
//! so from any instance, any tab or a plain form; the decision is stored
//! with who made it and the hash of the arguments they were shown, and
//! binds exactly those: if the call's arguments are not the ones shown,
//! the decision is refused. The reply's producer (on whichever instance)
//! reads it and records the outcome in the reply's tool log.

use super::Ingest;
use crate::error::AppError;
use crate::model::Status;
use crate::server::config::Approver;
use crate::server::store::ToolDecision;
use crate::tools::{ToolLog, ToolState};

/// Records `by`'s decision on call `index` of reply `id`, which they saw
/// with arguments hashing to `arguments_hash`.
pub async fn decide(
    state: &Ingest,
    thread_id: &str,
    id: i64,
    index: u32,
    arguments_hash: &str,
    approved: bool,
    by: &str,
) -> Result<(), AppError> {
    let by = super::outbox::requester(by);
    let by = by.as_str();
    let Some(message) = state.store.message(thread_id, id).await? else {
        return Err(AppError::no_message(id));
    };
    let log = ToolLog::parse(&message.tools);
    let Some(call) = log.call(index) else {
        return Err(AppError::NotFound("There is no such tool call.".into()));
    };
    if message.status != Status::Streaming || call.state != ToolState::Waiting {
        let now = if message.status == Status::Streaming {
            call.state.label()
        } else {
            message.status.label()
        };
        return Err(AppError::Conflict(format!(
            "This call is not waiting for approval any more ({now})."
        )));
    }
    if call.arguments_hash() != arguments_hash {
        return Err(AppError::Conflict(
            "The call's arguments are not the ones you were shown; look at them again \
             before deciding."
                .into(),
        ));
    }
    if state.config.tools.approver == Approver::Requester
        && message.requested_by.as_deref() != Some(by)
    {
        return Err(AppError::Forbidden(crate::tools::who_may_decide(
            true,
            message.requested_by.as_deref(),
        )));
    }
    let decision = ToolDecision {
        message_id: id,
        call_index: index,
        round: call.round,
        arguments_hash: arguments_hash.to_owned(),
        approved,
        decided_by: by.to_owned(),
        decided_at: crate::server::now_ms(),
    };
    if state.store.decide_tool_call(&decision).await? {
        tracing::info!(
            message_id = id,
            call = index,
            approved,
            by,
            "tool call decided"
        );
        Ok(())
    } else {
        Err(AppError::Conflict(
            "Someone has already decided on this call.".into(),
        ))
    }
}
