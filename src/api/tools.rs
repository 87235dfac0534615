use leptos::prelude::*;

use crate::error::AppError;

/// Approves or denies a tool call waiting for approval. `arguments_hash`
/// names the arguments the decider was shown: a call whose arguments are
/// not those is refused. `decision` is `approve` or `deny`.
#[server(endpoint = "decide_tool_call")]
pub async fn decide_tool_call(
    thread: String,
    id: i64,
    call: u32,
    arguments_hash: String,
    decision: String,
    #[server(default)] by: String,
) -> Result<(), AppError> {
    use super::respond;
    let state = respond::state();
    let result = async {
        let approved = match decision.as_str() {
            "approve" => true,
            "deny" => false,
            _ => return Err(AppError::Invalid("Decide approve or deny.".into())),
        };
        let (who, _) = respond::member(&state, &thread).await?;
        crate::server::ingest::approvals::decide(
            &respond::ingest(&state),
            &thread,
            id,
            call,
            &arguments_hash,
            approved,
            who.name_or(&by),
        )
        .await
    }
    .await;
    respond::finish(result)
}
