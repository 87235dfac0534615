//! A reply's tool calls on the page: one compact card per call (name,
//! state, duration, arguments; the result folded in a `<details>`),
//! between the thinking and the answer. Plain HTML, so it reads the same
//! without JavaScript; a call waiting for approval carries Approve / Deny
//! forms.

use leptos::{prelude::*, server_fn::ServerFn};

use super::viewer::{Approvers, Viewer};
use crate::{
    api::{decide_tool_call, DecideToolCall},
    live::MessageList,
    markdown::{code_block, to_html},
    model::Status,
    pretty_json,
    tools::{who_may_decide, ToolCall, ToolLog, ToolState},
};

/// What a card says about its call: its state, or, for a call the reply
/// ended without finishing, that it never finished.
fn state_label(state: ToolState, reply: Status) -> &'static str {
    if reply != Status::Streaming && !state.is_final() {
        "not finished"
    } else {
        state.label()
    }
}

#[component]
pub fn ToolCalls(
    id: i64,
    calls: ArcRwSignal<ToolLog>,
    status: Signal<Status>,
    requested_by: Option<String>,
) -> impl IntoView {
    let has_calls = {
        let calls = calls.clone();
        Memo::new(move |_| calls.with(|log| !log.is_empty()))
    };
    // Keyed by what a card shows: a card is redrawn only when its own call
    // changes (a viewer's open result stays open while another call streams).
    let each = move || calls.with(|log| log.calls().to_vec());
    let key = |call: &ToolCall| {
        (
            call.index,
            call.state.as_str(),
            call.arguments.len(),
            call.output.is_some(),
            call.decided_by.is_some(),
            call.name.clone(),
        )
    };
    view! {
        <section class="tool-calls" aria-label="Tool calls" hidden=move || !has_calls.get()>
            <For each key let:call>
                <ToolCard id call status requested_by=requested_by.clone()/>
            </For>
        </section>
    }
}

#[component]
fn ToolCard(
    id: i64,
    call: ToolCall,
    status: Signal<Status>,
    requested_by: Option<String>,
) -> impl IntoView {
    let state = call.state;
    let decide = (state == ToolState::Waiting).then(|| {
        view! { <Decide id call=call.index hash=call.arguments_hash() status requested_by/> }
    });
    let label = move || state_label(state, status.get());
    let arguments = to_html(&code_block(&pretty_json::pretty(&call.arguments), "json"));
    let output = call.output.as_deref().map(|o| to_html(&code_block(o, "")));
    let duration = call.ms.map(|ms| format!("{ms} ms"));
    let decided = call.decided_by.clone().map(|by| match state {
        ToolState::Denied => format!("denied by {by}"),
        _ => format!("approved by {by}"),
    });
    let result_label = if state == ToolState::Done {
        "Result"
    } else {
        "Why"
    };
    view! {
        <div
            class="tool-call"
            role="group"
            aria-label=format!("Tool call {}", call.name)
            data-state=state.as_str()
        >
            <p class="tool-head">
                <span class="tool-name">{call.name.clone()}</span>
                <span class="tool-state">{label}</span>
                {duration.map(|d| view! { <span class="tool-ms">{d}</span> })}
            </p>
            <div class="tool-arguments" aria-label="Arguments" inner_html=arguments></div>
            {decide}
            {decided.map(|d| view! { <p class="tool-decided">{d}</p> })}
            {output.map(|o| view! {
                <details class="tool-output">
                    <summary>{result_label}</summary>
                    <div inner_html=o></div>
                </details>
            })}
        </div>
    }
}

/// Approve / Deny for a call waiting for approval: plain forms posting to
/// the server function (no JavaScript needed), called in place once
/// hydrated. They carry the hash of the arguments shown above them, so a
/// decision binds exactly those.
#[component]
fn Decide(
    id: i64,
    call: u32,
    hash: String,
    status: Signal<Status>,
    requested_by: Option<String>,
) -> impl IntoView {
    let viewer = expect_context::<Viewer>().0;
    let list = expect_context::<MessageList>();
    let rule = use_context::<Approvers>().unwrap_or(Approvers {
        requester_only: false,
        fixed_name: false,
    });
    let who_may = who_may_decide(rule.requester_only, requested_by.as_deref());
    // With a name the viewer cannot change, someone else's call offers no
    // buttons: the card says whose it is.
    let not_mine = rule.fixed_name
        && rule.requester_only
        && requested_by.as_deref() != Some(viewer.get_untracked().as_str());
    let error = RwSignal::new(None::<String>);
    let form = move |approve: bool| {
        let hash = hash.clone();
        let sent = hash.clone();
        let submit = move |ev: leptos::ev::SubmitEvent| {
            ev.prevent_default();
            error.set(None);
            let (by, hash) = (viewer.get_untracked(), sent.clone());
            let decision = if approve { "approve" } else { "deny" }.to_owned();
            leptos::task::spawn_local(async move {
                if let Err(e) = decide_tool_call(list.thread(), id, call, hash, decision, by).await
                {
                    error.set(Some(e.to_string()));
                }
            });
        };
        view! {
            <form method="post" action=DecideToolCall::url() class="inline" on:submit=submit>
                <input type="hidden" name="thread" value=list.thread()/>
                <input type="hidden" name="id" value=id/>
                <input type="hidden" name="call" value=call/>
                <input type="hidden" name="arguments_hash" value=hash/>
                <input type="hidden" name="decision" value=if approve { "approve" } else { "deny" }/>
                <input type="hidden" name="by" prop:value=move || viewer.get() value=viewer.get_untracked()/>
                <button type="submit" class:deny=!approve>{if approve { "Approve" } else { "Deny" }}</button>
            </form>
        }
    };
    view! {
        <div class="tool-decide" hidden=move || status.get() != Status::Streaming>
            <p class="tool-approvers">{who_may}</p>
            {(!not_mine).then(|| view! { {form(true)} {form(false)} })}
            <span class="action-error" role="alert">{move || error.get()}</span>
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_block_keeps_backticks_inside() {
        let block = code_block("a ``` b ```` c", "");
        assert!(block.starts_with("`````\n"));
        let html = to_html(&block);
        assert!(html.contains("a ``` b ```` c"));
    }
}
