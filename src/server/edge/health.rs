//! Operators' endpoints: `/healthz` (database writable, writer alive) and
//! `/metrics` (Prometheus text).

use std::time::Duration;

use axum::{extract::State, http::StatusCode, response::IntoResponse, Json};
use serde_json::json;

use std::sync::Arc;

use crate::server::{
    metrics::Metrics,
    store::{writer::Writer, Store},
};

/// 200 when the database can be written and the writer commits; 503
/// with the failing part otherwise.
pub async fn healthz(
    State(store): State<Store>,
    State(writer): State<Writer>,
) -> impl IntoResponse {
    let database = match tokio::time::timeout(Duration::from_secs(2), store.probe_write()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "health: database not writable");
            format!("not writable: {e}")
        }
        Err(_) => "not answering (2 s)".to_owned(),
    };
    let appender = match tokio::time::timeout(Duration::from_secs(2), writer.ping()).await {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(_)) => "stopped".to_owned(),
        Err(_) => "not committing (2 s)".to_owned(),
    };
    let healthy = database == "ok" && appender == "ok";
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "database": database, "appender": appender })),
    )
}

pub async fn metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
}
