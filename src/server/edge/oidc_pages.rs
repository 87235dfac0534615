//! Sign in with OpenID Connect, as pages (no JavaScript needed):
//!
//! - `GET /signin/oidc/{id}?next=`: to the provider, the flow's state in a
//!   cookie.
//! - `POST /account/oidc/{id}`: the same, to link the provider's identity
//!   to the signed-in account.
//! - `GET /signin/oidc/{id}/callback`: the provider's answer; signed in
//!   (303 to `next`), linked (303 to `/account`), or the refusal's page.

use axum::{
    extract::{Path, Query, State},
    http::{header, HeaderMap},
    response::Response,
    routing::{get, post},
    Extension, Router,
};
use serde::Deserialize;

use super::access::{Door, Requester};
use super::account_pages::{accounts, origin, safe_next, signed_in_response, Me};
use super::plain_html::{error_line, redirect, refused_form};
use crate::error::AppError;
use crate::server::accounts::{cookie, oidc::Finished};

pub fn routes<S>() -> Router<S>
where
    Door: axum::extract::FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/signin/oidc/{id}", get(start))
        .route("/signin/oidc/{id}/callback", get(callback))
        .route("/account/oidc/{id}", post(link))
}

#[derive(Deserialize)]
struct StartQuery {
    next: Option<String>,
}

async fn start(
    State(door): State<Door>,
    Path(id): Path<String>,
    Query(q): Query<StartQuery>,
    headers: HeaderMap,
    Extension(who): Extension<Requester>,
) -> Response {
    let next = safe_next(q.next.as_deref()).to_owned();
    begin(&door, &id, &headers, &who, &next, None).await
}

async fn link(
    State(door): State<Door>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Extension(who): Extension<Requester>,
    Me(account): Me,
) -> Response {
    begin(&door, &id, &headers, &who, "/account", Some(&account)).await
}

async fn begin(
    door: &Door,
    id: &str,
    headers: &HeaderMap,
    who: &Requester,
    next: &str,
    link: Option<&crate::server::store::AccountRow>,
) -> Response {
    let started = async {
        accounts(door)?
            .oidc_start(id, &origin(headers, who.https), next, link, &who.client)
            .await
    };
    match started.await {
        Ok(started) => {
            let mut response = redirect(&started.url);
            response.headers_mut().insert(
                header::SET_COOKIE,
                cookie::set_oidc_state(Some(&started.state), who.https),
            );
            response
        }
        Err(e) => refused(&e),
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn callback(
    State(door): State<Door>,
    Path(id): Path<String>,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
    Extension(who): Extension<Requester>,
) -> Response {
    let finished = async {
        if let Some(error) = &q.error {
            let said: String = error
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            return Err(AppError::Unauthorized(format!(
                "The provider did not sign you in ({said})."
            )));
        }
        let (Some(code), Some(state)) = (&q.code, &q.state) else {
            return Err(AppError::Invalid(
                "The provider's answer has no code.".into(),
            ));
        };
        let held = cookie::named(&headers, cookie::OIDC_STATE_COOKIE);
        accounts(&door)?
            .oidc_finish(&id, state, held.as_deref(), code)
            .await
    };
    let mut response = match finished.await {
        Ok(Finished::SignedIn { signed_in, next }) => {
            signed_in_response(&door, &who, &signed_in, safe_next(Some(&next)))
        }
        Ok(Finished::Linked) => redirect("/account"),
        Err(e) => refused(&e),
    };
    // The state was for one answer: the cookie goes either way.
    response
        .headers_mut()
        .append(header::SET_COOKIE, cookie::set_oidc_state(None, who.https));
    response
}

/// A refused sign-in: its reason on a page with the refusal's status.
fn refused(error: &AppError) -> Response {
    let body = format!(
        r#"<h1>Sign in</h1>{}<p><a href="/signin">Back to sign in</a></p>"#,
        error_line(Some(error))
    );
    refused_form(error, "Sign in", &body)
}
