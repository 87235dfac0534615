//! One reply: build the prompt, stream the completion (retrying rate limits
//! and server errors before the first token), pass the text through the
//! chunker to the writer, and record how it ended. Runs as its own tokio
//! task, so the browser that asked has no say in its lifetime; it ends on
//! the provider's finish, an error, Stop, the watchdog, or shutdown.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use futures::{FutureExt, StreamExt};
use tokio::time::Instant;
use tracing::Instrument;

use super::{
    chunker::Chunker,
    generations::{EndRequest, Handle},
    provider::{
        prompt_name, shown, stream_error, ChoiceDelta, Chunk, PromptMessage, StartError,
        ToolDefinition,
    },
    Ingest,
};
use crate::model::{Message, Outcome, Part, ReplyStats, Role, Status, Usage};
use crate::server::{metrics::ProviderError, sleep_until, store::AtShutdown};
use crate::tools::ToolLog;

mod assemble;
mod steps;

use assemble::StepCalls;

/// Starts generating `reply` (a committed `streaming` row). With `resume`,
/// the stored text is sent as the start of the assistant turn and what
/// comes back is appended to it (Continue); a tool loop goes on from its
/// last committed step (see `steps`).
pub fn spawn(state: Ingest, reply: Message, handle: Handle, resume: bool) {
    let id = reply.id;
    let span = tracing::info_span!("reply", message_id = id);
    let generations = state.generations.clone();
    let task = async move {
        let thread_id: Arc<str> = reply.thread_id.as_str().into();
        // Settles the reply if this task is dropped before it recorded an
        // end (cancelled by the runtime, or a panic in the recording).
        let mut unsettled = Unsettled::new(&state, &thread_id, id);
        state.metrics.replies_live.inc();
        let generation = Generation {
            state: &state,
            thread_id: &thread_id,
            reply: &reply,
            handle: &handle,
            resume,
            bytes: AtomicUsize::new(0),
        };
        let run = generation.run();
        // A panic anywhere in the generation (a provider's header, a
        // model's hostile output) ends the reply `failed`, never leaves it
        // `streaming` with its lease renewed.
        let outcome = match std::panic::AssertUnwindSafe(run).catch_unwind().await {
            Ok(outcome) => outcome,
            Err(panic) => {
                tracing::error!(
                    message_id = id,
                    panic = panic_words(panic.as_ref()),
                    "a reply's task panicked; ending it failed"
                );
                Outcome::failed(PANICKED.into())
            }
        };
        state.metrics.replies_live.dec();
        state.metrics.reply_ended(outcome.status);
        tracing::info!(
            status = outcome.status.as_str(),
            error = ?outcome.error,
            retries = outcome.stats.retries,
            "reply ended"
        );
        // Several instances: a reply cut short by this instance's shutdown
        // is handed over (another instance continues it), not ended.
        let handover = state.coordination.at_shutdown() == AtShutdown::HandOver
            && handle.end_request() == Some(EndRequest::Shutdown);
        let recorded = if handover {
            tracing::info!(message_id = id, "shutting down: handing the reply over");
            state.writer.release(&thread_id, id).await
        } else {
            state.writer.finish(&thread_id, id, outcome).await
        };
        unsettled.disarm();
        if let Err(e) = recorded {
            tracing::error!(message_id = id, error = %e, "could not record the end of a reply");
        }
        drop(handle);
    };
    generations.spawn(task.instrument(span));
}

/// How a reply that came to `ending` ends: its status, its error, and who
/// stopped it.
fn ended_as(ending: Ending) -> (Status, Option<String>, Option<String>) {
    match ending {
        Ending::Finished => (Status::Done, None, None),
        Ending::Failed(message) => (Status::Failed, Some(message), None),
        Ending::Ended(EndRequest::Stop { by }) => (
            Status::Cancelled,
            Some(format!("Stopped by {by}.")),
            Some(by),
        ),
        Ending::Ended(EndRequest::IdleTimeout(after)) => (
            Status::TimedOut,
            Some(format!(
                "No reply from the provider for {} s; gave up.",
                after.as_secs_f64()
            )),
            None,
        ),
        Ending::Ended(EndRequest::TotalTimeout(after)) => (
            Status::TimedOut,
            Some(format!(
                "The reply took longer than {} s; gave up.",
                after.as_secs_f64()
            )),
            None,
        ),
        Ending::Ended(EndRequest::Storage) => (
            Status::Failed,
            Some(
                "The reply could not be stored (the server's database refused the write); \
                 the text above is what was saved."
                    .into(),
            ),
            None,
        ),
        Ending::Ended(EndRequest::LeaseLost) => (
            Status::Interrupted,
            Some("Another server took this reply over.".into()),
            None,
        ),
        Ending::Ended(EndRequest::Shutdown) => (
            Status::Interrupted,
            Some(crate::model::SERVER_STOPPED.into()),
            None,
        ),
    }
}

/// What a reply whose task failed unexpectedly says.
pub const PANICKED: &str =
    "The server failed while writing this reply (an internal error); it was ended.";

/// A panic's message, for the log.
fn panic_words(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// A reply's task that has not recorded its end yet. Dropped armed (the
/// task was dropped or unwound past its recording), it queues the reply's
/// end as `failed` on its own task, so no reply stays `streaming`.
struct Unsettled {
    writer: crate::server::store::writer::Writer,
    thread_id: Arc<str>,
    id: i64,
    armed: bool,
}

impl Unsettled {
    fn new(state: &Ingest, thread_id: &Arc<str>, id: i64) -> Self {
        Self {
            writer: state.writer.clone(),
            thread_id: thread_id.clone(),
            id,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (writer, thread_id, id) = (self.writer.clone(), self.thread_id.clone(), self.id);
        tracing::error!(
            message_id = id,
            "a reply's task ended without its end; ending it failed"
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = writer
                    .finish(&thread_id, id, Outcome::failed(PANICKED.into()))
                    .await;
            });
        }
    }
}

struct Generation<'a> {
    state: &'a Ingest,
    thread_id: &'a Arc<str>,
    reply: &'a Message,
    handle: &'a Handle,
    resume: bool,
    /// Bytes of the reply: its parts as stored when this task began (a
    /// resumed reply's), the text taken since and the tool records
    /// appended; `limits.max_reply_bytes` caps it (see [`Generation::room`]).
    bytes: AtomicUsize,
}

/// What one attempt produced so far.
#[derive(Default)]
struct Progress {
    /// Everything the model wrote (thinking and answer), for a token
    /// estimate when the provider sends no usage.
    text: String,
    prompt_text: String,
    /// Bytes of the answer so far (with the stored text a resumed reply
    /// had): where a tool call began (`at`) is an offset into it.
    answer_len: usize,
    finish_reason: Option<String>,
    /// Usage summed over the model steps ...
    usage: Option<Usage>,
    /// ... unless a step reported none (then the whole is estimated).
    usage_missing: bool,
    /// The first text of either part (time to first token).
    first_text_at: Option<Instant>,
    first_thinking_at: Option<Instant>,
    first_answer_at: Option<Instant>,
    retries: i64,
    /// The reply reached `max_reply_bytes` (its finish reason is then
    /// [`REPLY_CAP_REASON`]).
    capped: bool,
}

/// One chunker per text part of the reply (by [`Part::index`]): thinking
/// and answer are grouped, committed and offset separately. (Tool records
/// are whole lines: they go to the writer as they are.)
struct Chunkers([Chunker; 2]);

/// The parts that stream text through a chunker.
const TEXT_PARTS: [Part; 2] = [Part::Answer, Part::Thinking];

/// How a reply ends when the writer is gone under it.
const SHUTTING_DOWN: &str = "The server is shutting down.";

/// What a chunk's choice came to.
enum Step {
    Going,
    /// The reply ends (what it holds is flushed first).
    Ended(Ending),
    /// The reply ends at once (nothing more can be written).
    Aborted(Ending),
}

/// The state of reading one step's stream that a choice changes.
struct Reading<'a> {
    chunkers: &'a mut Chunkers,
    progress: &'a mut Progress,
    calls: &'a mut StepCalls,
    log: &'a mut ToolLog,
    arguments_since: &'a mut Option<Instant>,
}

impl Chunkers {
    fn deadline(&self) -> Option<Instant> {
        self.0.iter().filter_map(Chunker::deadline).min()
    }
}

/// The finish reason of a reply the size cap ended (the one providers give
/// for their own length cut).
pub const REPLY_CAP_REASON: &str = "length";

enum Ending {
    Finished,
    Failed(String),
    Ended(EndRequest),
}

impl Generation<'_> {
    /// Bytes the reply may still take.
    fn room(&self) -> usize {
        self.state
            .config
            .limits
            .max_reply_bytes
            .saturating_sub(self.bytes.load(Ordering::Relaxed))
    }

    /// Counts `n` more bytes of the reply.
    fn took(&self, n: usize) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// The reply ends at its size cap, as a provider's own length cut does.
    fn capped(&self, progress: &mut Progress) -> Ending {
        tracing::warn!(
            message_id = self.reply.id,
            max_bytes = self.state.config.limits.max_reply_bytes,
            "reply reached the size cap; ending it"
        );
        progress.finish_reason = Some(REPLY_CAP_REASON.into());
        progress.capped = true;
        Ending::Finished
    }

    async fn run(&self) -> Outcome {
        let started = Instant::now();
        let mut progress = Progress::default();
        let ending = self.run_steps(&mut progress).await;
        self.outcome(ending, progress, started).await
    }

    /// The system prompt and the thread's messages before the reply.
    async fn prompt(&self) -> Result<Vec<PromptMessage>, String> {
        let bot = &self.state.bots.get(&self.reply.author).config;
        let before = self.reply.context_before.unwrap_or(self.reply.id);
        let history = self
            .state
            .store
            .context(self.thread_id, before, bot.context_messages)
            .await
            .map_err(|e| format!("Could not read the thread: {e}"))?;
        let mut prompt = vec![PromptMessage::text("system", bot.system_prompt.clone())];
        prompt.extend(history.into_iter().map(|m| {
            let role = if m.role == Role::User {
                "user"
            } else {
                "assistant"
            };
            PromptMessage {
                name: (m.role == Role::User)
                    .then(|| prompt_name(&m.author))
                    .flatten(),
                ..PromptMessage::text(role, m.body)
            }
        }));
        Ok(prompt)
    }

    /// Starts the completion, retrying 429 / 5xx with backoff.
    async fn start(
        &self,
        prompt: &[PromptMessage],
        tools: &[ToolDefinition],
        progress: &mut Progress,
    ) -> Result<super::provider::ChunkStream, Ending> {
        let cancel = self.handle.cancel_token();
        loop {
            let attempt = self
                .state
                .bots
                .get(&self.reply.author)
                .provider
                .stream(prompt.to_vec(), tools.to_vec());
            let result = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(self.ended()),
                result = attempt => result,
            };
            let error = match result {
                Ok(stream) => {
                    if progress.retries > 0 {
                        let _ = self
                            .state
                            .writer
                            .notice(self.thread_id, self.reply.id, None, progress.retries)
                            .await;
                    }
                    return Ok(stream);
                }
                Err(error) => error,
            };
            let wait = self.retry(error, progress).await?;
            self.handle.touch();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(self.ended()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// A refused start: the metric, then the wait before the next attempt
    /// (the provider's `Retry-After`, else exponential backoff) with a
    /// notice on the reply; `Err` when the reply ends instead (not worth
    /// retrying, out of retries, or a wait past the idle timeout).
    async fn retry(&self, error: StartError, progress: &mut Progress) -> Result<Duration, Ending> {
        let limits = &self.state.config.limits;
        self.state.metrics.provider_error(match error.status {
            Some(429) => ProviderError::RateLimited,
            Some(500..=599) => ProviderError::ServerError,
            Some(_) => ProviderError::Refused,
            None => ProviderError::Unreachable,
        });
        if !error.retryable() || progress.retries >= i64::from(limits.provider_retries) {
            return Err(Ending::Failed(error.message));
        }
        progress.retries += 1;
        let backoff = Duration::from_millis(limits.retry_base_ms)
            .saturating_mul(2u32.saturating_pow(progress.retries as u32 - 1));
        let wait = error.retry_after.unwrap_or(backoff);
        if wait >= limits.idle_timeout() {
            // Waiting would only end in a timeout that blames the provider's silence.
            return Err(Ending::Failed(format!(
                "{} The provider asked to wait {:.0} s before retrying, longer than this \
                 app waits for a reply ({:.0} s). Try again later.",
                error.message,
                wait.as_secs_f64().ceil(),
                limits.idle_timeout_secs
            )));
        }
        let notice = format!(
            "{} Retrying in {:.0} s (retry {} of {}).",
            error.message,
            wait.as_secs_f64().ceil(),
            progress.retries,
            limits.provider_retries
        );
        tracing::warn!(
            message_id = self.reply.id,
            retries = progress.retries,
            ?wait,
            "provider refused; retrying"
        );
        let _ = self
            .state
            .writer
            .notice(
                self.thread_id,
                self.reply.id,
                Some(notice),
                progress.retries,
            )
            .await;
        Ok(wait)
    }

    /// One model step: streams the completion's text into the reply and
    /// its tool calls into `calls` (and the tool log).
    async fn stream(
        &self,
        prompt: Vec<PromptMessage>,
        tools: &[ToolDefinition],
        progress: &mut Progress,
        calls: &mut StepCalls,
        log: &mut ToolLog,
    ) -> Ending {
        let mut stream = match self.start(&prompt, tools, progress).await {
            Ok(stream) => stream,
            Err(ending) => return ending,
        };
        let (mut chunkers, max_delay) = self.chunkers().await;
        let cancel = self.handle.cancel_token();
        // Made once, not per token (each one joins and leaves a waiter list).
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        let mut usage = None;
        // Since when the step's calls hold arguments not yet written.
        let mut arguments_since: Option<Instant> = None;
        let ending = loop {
            let deadline = [chunkers.deadline(), arguments_since.map(|t| t + max_delay)]
                .into_iter()
                .flatten()
                .min();
            let item = tokio::select! {
                biased;
                _ = &mut cancelled => break self.ended(),
                _ = sleep_until(deadline) => {
                    let due = arguments_since.is_some_and(|t| Instant::now() >= t + max_delay);
                    if due {
                        arguments_since = None;
                    }
                    if !self.on_deadline(&mut chunkers, due, calls, log).await {
                        return Ending::Failed(SHUTTING_DOWN.into());
                    }
                    continue;
                }
                item = stream.next() => item,
            };
            let Some(item) = item else {
                break if progress.finish_reason.is_some() {
                    Ending::Finished
                } else {
                    Ending::Failed(
                        "The provider's stream ended before the reply was finished.".into(),
                    )
                };
            };
            let chunk = match self.chunk(item, &mut usage) {
                Ok(chunk) => chunk,
                Err(ending) => break ending,
            };
            let mut reading = Reading {
                chunkers: &mut chunkers,
                progress: &mut *progress,
                calls: &mut *calls,
                log: &mut *log,
                arguments_since: &mut arguments_since,
            };
            let step = self.take_chunk(chunk, &mut reading).await;
            match step {
                Step::Going => {}
                Step::Ended(ending) => break ending,
                Step::Aborted(ending) => return ending,
            }
        };
        // Dropping the stream closes the provider connection; text received
        // so far is kept.
        drop(stream);
        progress.add_usage(usage);
        let records = calls.finish(progress.answer_len);
        self.record_all(&mut chunkers, records, log).await;
        for part in TEXT_PARTS {
            self.flush(&mut chunkers, part).await;
        }
        ending
    }

    /// One chunker per text part, at the thread's granularity, and the
    /// longest a piece of text (or a call's arguments) waits.
    async fn chunkers(&self) -> (Chunkers, Duration) {
        let stream_config = &self.state.config.stream;
        let granularity = match self.state.store.thread_granularity(self.thread_id).await {
            Ok(Some(g)) => g,
            _ => stream_config.granularity,
        };
        let max_delay = Duration::from_millis(stream_config.max_delay_ms);
        let chunkers = Chunkers([
            Chunker::new(granularity, max_delay),
            Chunker::new(granularity, max_delay),
        ]);
        (chunkers, max_delay)
    }

    /// A deadline passed: held arguments (when `arguments_due`) and text
    /// waiting for a word or sentence end go out. False once the writer
    /// is gone (shutdown).
    async fn on_deadline(
        &self,
        chunkers: &mut Chunkers,
        arguments_due: bool,
        calls: &mut StepCalls,
        log: &mut ToolLog,
    ) -> bool {
        let now = Instant::now();
        if arguments_due && !self.record_all(chunkers, calls.take_arguments(), log).await {
            return false;
        }
        for part in TEXT_PARTS {
            let chunker = &mut chunkers.0[part.index()];
            let received = chunker.pending_since();
            if let Some(piece) = chunker.poll(now) {
                if !self.append(part, piece, received).await {
                    return false;
                }
            }
        }
        true
    }

    /// A stream item as a chunk (its usage noted), or how the reply ends:
    /// the stream broke, or the provider reported an error inside it.
    fn chunk(
        &self,
        item: Result<Chunk, async_openai::error::OpenAIError>,
        usage: &mut Option<Usage>,
    ) -> Result<Chunk, Ending> {
        let chunk = item.map_err(|e| {
            self.state.metrics.provider_error(ProviderError::Stream);
            Ending::Failed(stream_error(&e))
        })?;
        if let Some(error) = &chunk.error {
            self.state.metrics.provider_error(ProviderError::Stream);
            let message = error
                .get("message")
                .and_then(|m| m.as_str())
                .map_or_else(|| error.to_string(), str::to_owned);
            return Err(Ending::Failed(shown(&format!(
                "The provider reported an error: {message}"
            ))));
        }
        if let Some(u) = chunk.usage {
            *usage = Some(Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
                estimated: false,
                reasoning_tokens: u.completion_tokens_details.and_then(|d| d.reasoning_tokens),
            });
        }
        Ok(chunk)
    }

    /// A chunk's first choice (the one a reply is made of).
    async fn take_chunk(&self, chunk: Chunk, reading: &mut Reading<'_>) -> Step {
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            let step = self.take_choice(choice, reading).await;
            if !matches!(step, Step::Going) {
                return step;
            }
        }
        Step::Going
    }

    /// One choice of a chunk: its tool-call fragments, then its thinking
    /// and answer text (cut at the reply's size cap), then its finish.
    async fn take_choice(&self, mut choice: ChoiceDelta, r: &mut Reading<'_>) -> Step {
        if let Some(deltas) = choice.delta.tool_calls.take() {
            let records = r.calls.push(deltas, r.progress.answer_len, self.room());
            if !self.record_all(r.chunkers, records, r.log).await {
                return Step::Aborted(Ending::Failed(SHUTTING_DOWN.into()));
            }
            *r.arguments_since = match *r.arguments_since {
                _ if !r.calls.holds_arguments() => None,
                None => Some(Instant::now()),
                held => held,
            };
            if r.calls.reply_full() {
                return Step::Ended(self.capped(r.progress));
            }
        }
        let thinking = choice.delta.thinking();
        let answer = choice.delta.content.take().filter(|t| !t.is_empty());
        for (part, text) in [(Part::Thinking, thinking), (Part::Answer, answer)] {
            let Some(mut text) = text else { continue };
            // The reply size cap: what fits is kept, and the reply ends as
            // a provider's own length cut does.
            let room = self.room();
            let capped = text.len() > room;
            if capped {
                let mut at = room;
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                text.truncate(at);
            }
            if !text.is_empty() && !self.push(r.chunkers, part, &text, r.progress).await {
                return Step::Aborted(Ending::Failed(SHUTTING_DOWN.into()));
            }
            if capped {
                return Step::Ended(self.capped(r.progress));
            }
        }
        if choice.finish_reason.is_some() {
            r.progress.finish_reason = choice.finish_reason;
        }
        Step::Going
    }

    /// Appends tool records (after the text parts' pending text, so the
    /// offsets they name are committed first).
    async fn record_all(
        &self,
        chunkers: &mut Chunkers,
        records: Vec<crate::tools::ToolRecord>,
        log: &mut ToolLog,
    ) -> bool {
        if records.is_empty() {
            return true;
        }
        for part in TEXT_PARTS {
            if !self.flush(chunkers, part).await {
                return false;
            }
        }
        for record in records {
            if !self.record(record, log).await {
                return false;
            }
        }
        true
    }

    /// Takes text of one part from the provider. The other part's pending
    /// text is committed first, so viewers see the thinking whole before
    /// the answer starts. False when the writer is gone.
    async fn push(
        &self,
        chunkers: &mut Chunkers,
        part: Part,
        text: &str,
        progress: &mut Progress,
    ) -> bool {
        let now = Instant::now();
        self.handle.touch();
        self.state.metrics.tokens.inc();
        progress.first_text_at.get_or_insert(now);
        let answer_starts = part == Part::Answer && progress.first_answer_at.is_none();
        match part {
            Part::Thinking => progress.first_thinking_at.get_or_insert(now),
            _ => progress.first_answer_at.get_or_insert(now),
        };
        progress.text.push_str(text);
        self.took(text.len());
        if part == Part::Answer {
            progress.answer_len += text.len();
        }
        for other in TEXT_PARTS.into_iter().filter(|p| *p != part) {
            if !self.flush(chunkers, other).await {
                return false;
            }
        }
        // The thinking is over: viewers can say how long it took.
        if let Some(first) = progress.first_thinking_at.filter(|_| answer_starts) {
            let ms = now.saturating_duration_since(first).as_millis() as i64;
            if self
                .state
                .writer
                .thought(self.thread_id, self.reply.id, ms)
                .await
                .is_err()
            {
                return false;
            }
        }
        let chunker = &mut chunkers.0[part.index()];
        let received = chunker.pending_since();
        match chunker.push(text, now) {
            Some(piece) => self.append(part, piece, received).await,
            None => true,
        }
    }

    /// Commits what a part's chunker holds.
    async fn flush(&self, chunkers: &mut Chunkers, part: Part) -> bool {
        let chunker = &mut chunkers.0[part.index()];
        let received = chunker.pending_since();
        match chunker.flush() {
            Some(piece) => self.append(part, piece, received).await,
            None => true,
        }
    }

    /// Hands text to the writer; `received` is when its oldest part came
    /// from the provider (now, if nothing was pending).
    async fn append(&self, part: Part, text: String, received: Option<Instant>) -> bool {
        let received = received.unwrap_or_else(Instant::now);
        self.state
            .writer
            .append(self.thread_id, self.reply.id, part, text, received)
            .await
            .is_ok()
    }

    fn ended(&self) -> Ending {
        Ending::Ended(self.handle.end_request().unwrap_or(EndRequest::Shutdown))
    }

    async fn outcome(&self, ending: Ending, mut progress: Progress, started: Instant) -> Outcome {
        let ended = Instant::now();
        let usage = match progress.usage.filter(|_| !progress.usage_missing) {
            Some(usage) => Some(usage),
            None => {
                let texts = vec![
                    std::mem::take(&mut progress.prompt_text),
                    std::mem::take(&mut progress.text),
                ];
                let counts = super::tokens::count_blocking(texts).await;
                Some(Usage {
                    prompt_tokens: counts.first().copied().unwrap_or_default(),
                    completion_tokens: counts.get(1).copied().unwrap_or_default(),
                    estimated: true,
                    reasoning_tokens: None,
                })
            }
        };
        let ttft_ms = progress
            .first_text_at
            .map(|t| t.duration_since(started).as_millis() as i64);
        let tokens_per_second = match (progress.first_text_at, usage) {
            (Some(first), Some(u)) if u.completion_tokens > 0 => {
                let secs = ended.duration_since(first).as_secs_f64();
                (secs > 0.0).then(|| u.completion_tokens as f64 / secs)
            }
            _ => None,
        };
        let thinking_ms = progress.first_thinking_at.map(|first| {
            let until = progress.first_answer_at.unwrap_or(ended);
            until.saturating_duration_since(first).as_millis() as i64
        });
        let stats = ReplyStats {
            usage,
            ttft_ms,
            tokens_per_second,
            retries: progress.retries,
            thinking_ms,
        };
        let (status, error, stopped_by) = ended_as(ending);
        Outcome {
            status,
            error,
            finish_reason: progress.finish_reason,
            stopped_by,
            stats,
        }
    }
}
