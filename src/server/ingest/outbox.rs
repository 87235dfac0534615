//! Starting replies: validate, commit the rows (the user's message and the
//! placeholder reply in one transaction, or a restart), and only then start
//! the generation task. A placeholder row is the job record: one a crash
//! leaves `streaming` is found again at start-up ([`recover`]).

use super::{generate, generations::EndRequest, Ingest};
use crate::server::store::writer::NewAttempt;
use crate::{
    error::AppError,
    model::{
        validate_post_with, Message, NewPost, NewReply, Posted, Restart, Status, MAX_AUTHOR_CHARS,
        MAX_IDENTITY_CHARS,
    },
};

/// A post as the composer sent it.
pub struct Post<'a> {
    pub thread_id: String,
    pub author: &'a str,
    pub body: &'a str,
    /// The composer's id for this post; empty when it sent none.
    pub request_id: &'a str,
    /// The author is a sign-in proxy's identity (which may be as long as an
    /// e-mail address), not a typed name.
    pub signed_in: bool,
}

/// An id for a composer's next post: 128 random bits.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Longest request id accepted.
const MAX_REQUEST_ID: usize = 64;

/// Stores a post (and its placeholder replies) and starts the replies.
/// `client` keys the rate limit (the requester's address).
pub async fn send(state: &Ingest, client: &str, post: Post<'_>) -> Result<Posted, AppError> {
    let max_author = if post.signed_in {
        MAX_IDENTITY_CHARS
    } else {
        MAX_AUTHOR_CHARS
    };
    let (author, body) = validate_post_with(post.author, post.body, max_author)?;
    let request_id = validate_request_id(post.request_id)?;
    // A repeated post answers with what the first one stored, before any
    // limit counts it again.
    if let Some(id) = &request_id {
        if let Some(mut posted) = state.store.posted_by_request(&post.thread_id, id).await? {
            posted.repeated = true;
            return Ok(posted);
        }
    }
    // Limits are checked before anything is written: a refused request
    // changes nothing and the author still holds their text.
    let bots = state.bots.mentioned(&body);
    let mut slots = Vec::with_capacity(bots.len());
    for _ in &bots {
        slots.push(state.generations.reserve(Some(client))?);
    }
    // Each bot mentioned is one reply started, counted as one.
    state
        .generations
        .take_replies(&state.coordination, client, bots.len() as u32)
        .await?;
    let replies = bots
        .iter()
        .map(|bot| NewReply {
            handle: bot.config.handle.clone(),
            model: bot.provider.model().to_owned(),
        })
        .collect();
    let posted = state
        .writer
        .post(NewPost {
            thread_id: post.thread_id,
            author,
            body,
            request_id,
            replies,
        })
        .await?;
    if posted.repeated {
        // The same post raced in twice; the first one started the replies.
        return Ok(posted);
    }
    for (reply, slot) in posted.replies.iter().zip(slots) {
        tracing::info!(message_id = reply.id, thread_id = %reply.thread_id, bot = %reply.author, "reply started");
        let handle = state.generations.register(reply.id, slot);
        generate::spawn(state.clone(), reply.clone(), handle, false);
    }
    Ok(posted)
}

fn validate_request_id(id: &str) -> Result<Option<String>, AppError> {
    let id = id.trim();
    if id.is_empty() {
        return Ok(None);
    }
    if id.len() > MAX_REQUEST_ID
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(AppError::Invalid(format!(
            "A request id has 1 to {MAX_REQUEST_ID} letters, digits, - or _."
        )));
    }
    Ok(Some(id.to_owned()))
}

/// Regenerate (a new reply to the same prompt) or Continue (the same reply,
/// picked up where it stopped), of reply `id` in `thread_id`.
pub async fn restart(
    state: &Ingest,
    client: &str,
    thread_id: &str,
    id: i64,
    kind: Restart,
    by: &str,
) -> Result<Message, AppError> {
    let by = requester(by);
    let original = state
        .store
        .message(thread_id, id)
        .await?
        .ok_or_else(|| AppError::no_message(id))?;
    let allowed = match kind {
        Restart::Regenerate => original.can_regenerate(),
        Restart::Continue => original.can_continue(),
    };
    if !allowed {
        return Err(cannot_restart(original.status, kind));
    }
    let max = state.config.limits.max_reply_bytes;
    if kind == Restart::Continue
        && original.body.len() + original.thinking.len() + original.tools.len() >= max
    {
        return Err(AppError::Conflict(format!(
            "This reply reached its size limit ({max} bytes); it cannot be continued."
        )));
    }
    let slot = state.generations.reserve(Some(client))?;
    state
        .generations
        .take_replies(&state.coordination, client, 1)
        .await?;
    let model = state.bots.get(&original.author).provider.model().to_owned();
    // Whoever presses the button, the reply stays the asker's: tool calls
    // waiting for approval keep asking the same person.
    let requester = original.requested_by.clone().unwrap_or_else(|| by.clone());
    let reply = match kind {
        Restart::Regenerate => {
            state
                .writer
                .attempt(NewAttempt {
                    thread_id: original.thread_id,
                    author: original.author,
                    model,
                    requested_by: requester,
                    context_before: original.context_before.unwrap_or(original.id),
                })
                .await?
        }
        // Conditional in the same transaction: a reply that changed since
        // it was read (continued by someone else meanwhile) is refused.
        Restart::Continue => state
            .writer
            .reopen(thread_id, id, Status::CONTINUABLE, requester)
            .await?
            .ok_or_else(|| AppError::Conflict("This reply cannot be continued.".into()))?,
    };
    tracing::info!(message_id = reply.id, ?kind, %by, "reply restarted");
    let handle = state.generations.register(reply.id, slot);
    generate::spawn(
        state.clone(),
        reply.clone(),
        handle,
        kind == Restart::Continue,
    );
    Ok(reply)
}

fn cannot_restart(status: Status, kind: Restart) -> AppError {
    AppError::Conflict(format!(
        "This reply is {}; it cannot be {}.",
        status.label(),
        match kind {
            Restart::Continue => "continued",
            Restart::Regenerate => "regenerated",
        }
    ))
}

/// Stop: ends a streaming reply of `thread_id`, keeping its text, recording
/// who stopped it.
pub async fn stop(state: &Ingest, thread_id: &str, id: i64, by: &str) -> Result<(), AppError> {
    let by = requester(by);
    let Some(message) = state.store.message(thread_id, id).await? else {
        return Err(AppError::no_message(id));
    };
    if state
        .generations
        .end(id, EndRequest::Stop { by: by.clone() })
    {
        return Ok(());
    }
    // Several instances: the one generating it stops it (or, if none does
    // now, the one that takes it over ends it stopped).
    if state.coordination.request_stop(thread_id, id, &by).await? {
        return Ok(());
    }
    Err(AppError::Conflict(format!(
        "This reply has already ended ({}).",
        message.status.label()
    )))
}

/// A name for who asked, from what the browser sent.
pub(super) fn requester(by: &str) -> String {
    let by: String = by
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_IDENTITY_CHARS)
        .collect();
    if by.is_empty() {
        "someone".into()
    } else {
        by
    }
}
