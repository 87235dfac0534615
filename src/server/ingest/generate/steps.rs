//! The tool loop: model step, its calls, their results, the next step,
//! until the model answers or the step limit ends the reply. Each call's
//! states go into the reply's tool log, and each step is committed before
//! the next begins (the writer's `ping` answers once everything queued
//! before it is committed): `running` is stored before a tool runs, its
//! result before the model is asked again. So after a crash or a takeover
//! the run goes on from its last committed step: a call whose result is
//! stored is never run again; one that was running is run again only if
//! its tool is idempotent (else it fails, or asks for approval again, as
//! configured); one the model was still writing is dropped, and its step
//! asked again.

use std::time::Duration;

use tokio::time::Instant;

use super::{Ending, Generation, Progress, StepCalls};
use crate::model::{Part, Usage};
use crate::server::config::{Approval, Interrupted, ToolsConfig};
use crate::server::ingest::{
    provider::{PromptFunction, PromptMessage, PromptToolCall},
    tools::{CallContext, Tool},
};
use crate::server::store::ToolDecision;
use crate::tools::{ToolCall, ToolLog, ToolRecord, ToolState};

impl Progress {
    /// Adds one model step's usage (a step without any makes the whole an estimate).
    pub(super) fn add_usage(&mut self, step: Option<Usage>) {
        match (step, &mut self.usage) {
            (None, _) => self.usage_missing = true,
            (Some(step), None) => self.usage = Some(step),
            (Some(step), Some(total)) => {
                total.prompt_tokens += step.prompt_tokens;
                total.completion_tokens += step.completion_tokens;
                total.reasoning_tokens = match (total.reasoning_tokens, step.reasoning_tokens) {
                    (None, None) => None,
                    (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
                };
            }
        }
    }
}

/// The turns after the thread's messages: for each step that made calls,
/// the assistant's text in that step and its calls, then each call's
/// result; then the answer's text since the last step (a resumed reply's,
/// sent as the start of the assistant turn).
pub(super) fn continuation(answer: &str, log: &ToolLog) -> Vec<PromptMessage> {
    let mut turns = Vec::new();
    let mut from = 0;
    let calls: Vec<&ToolCall> = log.calls().iter().filter(|c| c.complete).collect();
    for step in calls.chunk_by(|a, b| a.step == b.step) {
        let at = step[0].at.clamp(from, answer.len());
        let text = answer.get(from..at).unwrap_or_default();
        from = at;
        turns.push(PromptMessage {
            content: (!text.is_empty()).then(|| text.to_owned()),
            tool_calls: step
                .iter()
                .map(|c| PromptToolCall {
                    id: c.id.clone(),
                    kind: "function",
                    function: PromptFunction {
                        name: c.name.clone(),
                        arguments: c.arguments.clone(),
                    },
                })
                .collect(),
            ..PromptMessage::text("assistant", String::new())
        });
        for call in step {
            turns.push(PromptMessage {
                tool_call_id: Some(call.id.clone()),
                ..PromptMessage::text("tool", result_for_model(call))
            });
        }
    }
    let rest = answer.get(from..).unwrap_or_default();
    if !rest.is_empty() {
        turns.push(PromptMessage::text("assistant", rest.to_owned()));
    }
    turns
}

/// What the model is told a call gave.
fn result_for_model(call: &ToolCall) -> String {
    let output = call.output.clone().unwrap_or_default();
    match call.state {
        ToolState::Done => output,
        ToolState::Denied => format!("The call was denied: {output}"),
        _ => format!("The call failed: {output}"),
    }
}

impl Generation<'_> {
    /// The whole reply: model steps and their calls.
    pub(super) async fn run_steps(&self, progress: &mut Progress) -> Ending {
        let bot = self.state.bots.get(&self.reply.author);
        let limits = &self.state.config.tools;
        let base = match self.prompt().await {
            Ok(prompt) => prompt,
            Err(e) => return Ending::Failed(e),
        };
        progress.prompt_text = base.iter().filter_map(|m| m.content.as_deref()).collect();
        let tools = match bot.tools.tools().await {
            Ok(tools) => tools,
            Err(e) => return Ending::Failed(e),
        };
        let definitions: Vec<_> = tools.iter().map(|t| t.definition.clone()).collect();
        // The answer as stored when a step begins (the next step's prompt
        // takes its pieces), and the tool log as this task appended it.
        let (mut answer, mut log) = if self.resume {
            match self.resumed(progress, &tools).await {
                Ok(resumed) => resumed,
                Err(ending) => return ending,
            }
        } else {
            (String::new(), ToolLog::default())
        };
        let mut step = log.calls().iter().map(|c| c.step + 1).max().unwrap_or(0);
        loop {
            let next_index = log.calls().iter().map(|c| c.index + 1).max().unwrap_or(0);
            let mut calls = step_calls(step, next_index, limits);
            let mut prompt = base.clone();
            prompt.extend(continuation(&answer, &log));
            let ending = self
                .stream(prompt, &definitions, progress, &mut calls, &mut log)
                .await;
            if !matches!(ending, Ending::Finished) || calls.is_empty() {
                return ending;
            }
            if let Some(ending) = self
                .refused_calls(step, &calls, &tools, &mut log, progress)
                .await
            {
                return ending;
            }
            if let Err(ending) = self.settle(&calls.indexes(), &tools, &mut log, false).await {
                return ending;
            }
            // Everything so far is committed (`settle` ends on the barrier).
            answer = match self.stored().await {
                Ok(stored) => stored.body,
                Err(ending) => return ending,
            };
            if self.room() == 0 {
                // No room for the model's next step: the reply ends here.
                return self.capped(progress);
            }
            progress.finish_reason = None;
            step += 1;
        }
    }

    /// A reply continued (Continue, a takeover): its stored answer and tool
    /// log, the calls a crash left unfinished settled first. What is stored
    /// counts against the reply's size cap (Stop and Continue never take a
    /// reply past it).
    async fn resumed(
        &self,
        progress: &mut Progress,
        tools: &[Tool],
    ) -> Result<(String, ToolLog), Ending> {
        let stored = self.stored().await?;
        self.took(stored.body.len() + stored.thinking.len() + stored.tools.len());
        progress.answer_len = stored.body.len();
        let mut log = ToolLog::parse(&stored.tools);
        let unfinished: Vec<u32> = log
            .calls()
            .iter()
            .filter(|c| !c.state.is_final())
            .map(|c| c.index)
            .collect();
        self.settle(&unfinished, tools, &mut log, true).await?;
        Ok((stored.body, log))
    }

    /// A step ended with calls: those that may not run are failed (the
    /// reply at its size cap, a bot without tools, the last step, arguments
    /// past their cap). `Some` when the reply ends here.
    async fn refused_calls(
        &self,
        step: u32,
        calls: &StepCalls,
        tools: &[Tool],
        log: &mut ToolLog,
        progress: &mut Progress,
    ) -> Option<Ending> {
        let limits = &self.state.config.tools;
        let indexes = calls.indexes();
        if progress.capped {
            let out = format!(
                "Not run: the reply reached its size limit of {} bytes.",
                self.state.config.limits.max_reply_bytes
            );
            self.fail_all(&indexes, &out, log).await;
            return Some(Ending::Finished);
        }
        if tools.is_empty() {
            // A model calling tools it was not offered: the calls are kept
            // (failed), and the reply ends as the model ended it.
            self.fail_all(&indexes, "This bot has no tools.", log).await;
            return Some(Ending::Finished);
        }
        if step + 1 >= limits.max_steps {
            self.fail_all(&indexes, "The bot reached its limit of tool steps.", log)
                .await;
            return Some(Ending::Failed(format!(
                "The bot made tool calls in each of its {} steps without answering; \
                 the reply was ended.",
                limits.max_steps
            )));
        }
        let oversized: Vec<u32> = indexes
            .iter()
            .copied()
            .filter(|&i| calls.oversized(i))
            .collect();
        let out = format!(
            "The arguments were longer than {} bytes.",
            limits.max_argument_bytes
        );
        if !self.fail_all(&oversized, &out, log).await {
            return Some(Ending::Failed("The server is shutting down.".into()));
        }
        None
    }

    /// The reply as stored now.
    async fn stored(&self) -> Result<crate::model::Message, Ending> {
        match self
            .state
            .store
            .message(self.thread_id, self.reply.id)
            .await
        {
            Ok(Some(stored)) => Ok(stored),
            Ok(None) => Err(Ending::Failed("The reply is gone.".into())),
            Err(e) => Err(Ending::Failed(format!("Could not read the reply: {e}"))),
        }
    }

    /// Ends calls `indexes` failed with `out` (their arguments as they
    /// stand); false when the writer is gone.
    async fn fail_all(&self, indexes: &[u32], out: &str, log: &mut ToolLog) -> bool {
        for &index in indexes {
            let h = log.call(index).map(ToolCall::arguments_hash);
            if !self.record(failed(index, h, out), log).await {
                return false;
            }
        }
        true
    }

    /// Brings calls `indexes` to a final state, in order: runs them (after
    /// approval where needed), or fails them. `resumed`: these calls are
    /// from before a restart or takeover (their states say how far they got).
    async fn settle(
        &self,
        indexes: &[u32],
        tools: &[Tool],
        log: &mut ToolLog,
        resumed: bool,
    ) -> Result<(), Ending> {
        let shutting_down = || Ending::Failed("The server is shutting down.".into());
        for &index in indexes {
            let Some(call) = log.call(index).cloned() else {
                continue;
            };
            if call.state.is_final() {
                continue;
            }
            let h = call.arguments_hash();
            let tool = tools.iter().find(|t| t.name() == call.name);
            let refusal = match (&tool, call.state) {
                (_, ToolState::Writing) if resumed => Some(
                    "The server stopped while the model was writing this call; it was not run."
                        .to_owned(),
                ),
                (None, _) if call.name.is_empty() => Some("The call names no tool.".to_owned()),
                (None, _) => Some(format!("There is no tool named `{}`.", call.name)),
                _ => None,
            };
            if let Some(out) = refusal {
                // A call cut off while being written is not sent back to the model.
                let hash = (call.state != ToolState::Writing || !resumed).then_some(h);
                if !self.record(failed(index, hash, &out), log).await {
                    return Err(shutting_down());
                }
                continue;
            }
            let tool = tool.expect("checked above");
            let mut state = call.state;
            let mut ask_again = false;
            if resumed && state == ToolState::Running && !tool.idempotent {
                match self.state.config.tools.on_interrupted {
                    Interrupted::Fail => {
                        let out = "The server stopped while this call ran, and the tool is not \
                                   safe to run twice; it was not run again.";
                        if !self.record(failed(index, Some(h), out), log).await {
                            return Err(shutting_down());
                        }
                        continue;
                    }
                    Interrupted::Ask => {
                        // A new round of approval: someone decides whether it runs twice.
                        state = ToolState::Writing;
                        ask_again = true;
                    }
                }
            }
            let needs_approval = ask_again
                || (tool.approval == Approval::Always
                    && matches!(state, ToolState::Writing | ToolState::Waiting));
            if needs_approval {
                match self.approval(index, &h, state, log).await? {
                    Decision::Approved => {}
                    Decision::Denied => continue,
                }
            }
            self.run_call(index, tool, &h, log).await?;
        }
        // The step is committed before the model is asked again.
        self.state
            .writer
            .ping()
            .await
            .map_err(|_| shutting_down())?;
        Ok(())
    }

    /// Runs one call: `running` committed first, then the tool, then its result.
    async fn run_call(
        &self,
        index: u32,
        tool: &Tool,
        h: &str,
        log: &mut ToolLog,
    ) -> Result<(), Ending> {
        let shutting_down = || Ending::Failed("The server is shutting down.".into());
        let running = record_of(index, ToolState::Running, Some(h), None, None, None);
        if !self.record(running, log).await || self.state.writer.ping().await.is_err() {
            return Err(shutting_down());
        }
        if self.handle.end_request().is_some() {
            return Err(self.ended());
        }
        let arguments = log
            .call(index)
            .map(|c| c.arguments.clone())
            .unwrap_or_default();
        let cx = CallContext {
            store: &self.state.store,
            thread_id: self.thread_id,
            before_id: self.reply.context_before.unwrap_or(self.reply.id),
            search_enabled: self.state.config.search.enabled,
        };
        let bot = self.state.bots.get(&self.reply.author);
        let started = Instant::now();
        let cancel = self.handle.cancel_token();
        let call = bot.tools.call(tool, &arguments, &cx);
        tokio::pin!(call);
        // A running tool is a sign of life (each has its own timeout, so
        // the reply's idle timeout does not cut a slow one short).
        let mut alive = tokio::time::interval(TOOL_ALIVE);
        let result = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break None,
                result = &mut call => break Some(result),
                _ = alive.tick() => self.handle.touch(),
            }
        };
        self.handle.touch();
        let ms = started.elapsed().as_millis() as i64;
        let (s, mut out) = match result {
            Some(Ok(out)) => (ToolState::Done, out),
            Some(Err(e)) => (ToolState::Failed, e),
            None => {
                let out = match self.handle.end_request() {
                    Some(super::EndRequest::Stop { by }) => format!("Stopped by {by}."),
                    _ => "The reply ended while the tool ran.".to_owned(),
                };
                self.record(failed(index, Some(h.to_owned()), &out), log)
                    .await;
                return Err(self.ended());
            }
        };
        self.state.metrics.tool_call(s == ToolState::Done);
        // The result takes what room the reply has left.
        let (fits, _) = super::assemble::escaped_prefix(&out, self.room());
        out.truncate(fits);
        let ended = record_of(index, s, Some(h), None, Some(out), Some(ms));
        if !self.record(ended, log).await {
            return Err(shutting_down());
        }
        Ok(())
    }

    /// Appends one record to the reply's tool log (and to our fold of it).
    pub(super) async fn record(&self, record: ToolRecord, log: &mut ToolLog) -> bool {
        let line = record.line();
        log.feed(&line);
        self.took(line.len());
        self.state
            .writer
            .append(
                self.thread_id,
                self.reply.id,
                Part::Tools,
                line,
                Instant::now(),
            )
            .await
            .is_ok()
    }
}

/// Call `index` is now in state `s` (for the arguments hashing to `h`).
fn record_of(
    index: u32,
    s: ToolState,
    h: Option<&str>,
    by: Option<String>,
    out: Option<String>,
    ms: Option<i64>,
) -> ToolRecord {
    ToolRecord::State {
        c: index,
        s,
        by,
        h: h.map(str::to_owned),
        out,
        ms,
    }
}

/// A call's end as failed, with why.
fn failed(index: u32, h: Option<String>, out: &str) -> ToolRecord {
    record_of(
        index,
        ToolState::Failed,
        h.as_deref(),
        None,
        Some(out.to_owned()),
        None,
    )
}

/// How someone decided on a call waiting for approval.
pub(super) enum Decision {
    Approved,
    Denied,
}

/// A step's calls, with the loop's limits.
fn step_calls(step: u32, base: u32, limits: &ToolsConfig) -> StepCalls {
    StepCalls::new(
        step,
        base,
        limits.max_calls_per_step as usize,
        limits.max_argument_bytes,
    )
}

/// How often a running tool counts as a sign of life for the watchdog.
const TOOL_ALIVE: Duration = Duration::from_secs(1);

/// How often a call waiting for approval looks for a decision (made on any
/// instance: the decision is a row).
const DECISION_POLL: Duration = Duration::from_millis(250);

impl Generation<'_> {
    /// Waits for someone to decide on call `index` (whose arguments hash to
    /// `h`), for at most `tools.approval_timeout_secs`; records `waiting`
    /// first unless the log says it already waits. The wait holds no
    /// generation slot and does not count against the reply's time limits;
    /// past its client's `waiting_replies_per_client` the call is refused.
    async fn approval(
        &self,
        index: u32,
        h: &str,
        state: ToolState,
        log: &mut ToolLog,
    ) -> Result<Decision, Ending> {
        let shutting_down = || Ending::Failed("The server is shutting down.".into());
        let waiting = match self.handle.wait_for_people() {
            Ok(waiting) => waiting,
            Err(refused) => {
                if !self
                    .record(failed(index, Some(h.to_owned()), &refused), log)
                    .await
                {
                    return Err(shutting_down());
                }
                return Ok(Decision::Denied);
            }
        };
        if state != ToolState::Waiting {
            let waiting = record_of(index, ToolState::Waiting, Some(h), None, None, None);
            if !self.record(waiting, log).await || self.state.writer.ping().await.is_err() {
                return Err(shutting_down());
            }
        }
        let round = log.call(index).map_or(0, |c| c.round);
        let cancel = self.handle.cancel_token();
        let decision = self.await_decision(index, h, round, log).await?;
        let back = self
            .handle
            .back_to_work(waiting, self.state.config.limits.idle_timeout())
            .await;
        let (record, outcome) = self.decided(index, h, decision);
        if !self.record(record, log).await {
            return Err(shutting_down());
        }
        if cancel.is_cancelled() {
            return Err(self.ended());
        }
        back.map_err(Ending::Failed)?;
        Ok(outcome)
    }

    /// Waits for a decision on call `index` (its `round` of waiting), at
    /// most the approval timeout (`None` then); a reply ended meanwhile
    /// fails the call and ends here.
    async fn await_decision(
        &self,
        index: u32,
        h: &str,
        round: u32,
        log: &mut ToolLog,
    ) -> Result<Option<ToolDecision>, Ending> {
        let limit = Duration::from_secs_f64(self.state.config.tools.approval_timeout_secs);
        let started = Instant::now();
        let cancel = self.handle.cancel_token();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    self.handle.paused(started.elapsed());
                    let out = match self.handle.end_request() {
                        Some(super::EndRequest::Stop { by }) => {
                            format!("Stopped by {by} while waiting for approval.")
                        }
                        _ => "The reply ended while this call waited for approval.".to_owned(),
                    };
                    self.record(failed(index, Some(h.to_owned()), &out), log).await;
                    return Err(self.ended());
                }
                _ = tokio::time::sleep(DECISION_POLL) => {}
            }
            self.handle.touch();
            match self
                .state
                .store
                .tool_decision(self.reply.id, index, round)
                .await
            {
                Ok(Some(decision)) => return Ok(Some(decision)),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "could not read a tool decision"),
            }
            if started.elapsed() >= limit {
                return Ok(None);
            }
        }
    }

    /// The call's record for a decision (or none in time), and whether it
    /// runs: approved only with the arguments that were shown.
    fn decided(
        &self,
        index: u32,
        h: &str,
        decision: Option<ToolDecision>,
    ) -> (ToolRecord, Decision) {
        match decision {
            Some(d) if d.approved && d.arguments_hash == h => (
                record_of(
                    index,
                    ToolState::Approved,
                    Some(h),
                    Some(d.decided_by),
                    None,
                    None,
                ),
                Decision::Approved,
            ),
            Some(d) => {
                let out = if d.approved {
                    "The approval was for other arguments.".to_owned()
                } else {
                    format!("Denied by {}.", d.decided_by)
                };
                (denied(index, h, Some(d.decided_by), out), Decision::Denied)
            }
            None => {
                let out = format!(
                    "No one approved it within {} s.",
                    self.state.config.tools.approval_timeout_secs
                );
                (denied(index, h, None, out), Decision::Denied)
            }
        }
    }
}

fn denied(index: u32, h: &str, by: Option<String>, out: String) -> ToolRecord {
    record_of(index, ToolState::Denied, Some(h), by, Some(out), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(index: u32, step: u32, at: usize, state: ToolState, out: &str) -> Vec<ToolRecord> {
        vec![
            ToolRecord::Call {
                c: index,
                step,
                at,
                id: format!("id{index}"),
                name: "t".into(),
            },
            ToolRecord::Args {
                c: index,
                x: "{}".into(),
            },
            ToolRecord::State {
                c: index,
                s: state,
                by: None,
                h: Some("h".into()),
                out: Some(out.into()),
                ms: None,
            },
        ]
    }

    #[test]
    fn continuation_gives_each_step_its_text_calls_and_results() {
        let mut text = String::new();
        for r in call(0, 0, 5, ToolState::Done, "r0")
            .into_iter()
            .chain(call(1, 0, 5, ToolState::Failed, "bad"))
            .chain(call(2, 1, 9, ToolState::Done, "r2"))
        {
            text += &r.line();
        }
        let turns = continuation("Hello then more", &ToolLog::parse(&text));
        let shape: Vec<(&str, Option<&str>, usize)> = turns
            .iter()
            .map(|t| (t.role, t.content.as_deref(), t.tool_calls.len()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("assistant", Some("Hello"), 2),
                ("tool", Some("r0"), 0),
                ("tool", Some("The call failed: bad"), 0),
                ("assistant", Some(" the"), 1),
                ("tool", Some("r2"), 0),
                ("assistant", Some("n more"), 0),
            ]
        );
        assert_eq!(turns[1].tool_call_id.as_deref(), Some("id0"));
    }
}
