//! Passkey ceremonies for `public/passkeys.js` (JSON in and out; WebAuthn
//! needs the browser's script):
//!
//! - `POST /join/passkey/start` `{token, name}` and `/join/passkey/finish`
//!   `{ceremony, credential}`: an account through a setup or invite link,
//!   with a passkey instead of a password; signed in.
//! - `POST /signin/passkey/start` `{name}` and `/signin/passkey/finish`
//!   `{ceremony, credential, next}`: signed in.
//! - `POST /account/passkeys/start` and `/account/passkeys/finish`: one
//!   more passkey for the signed-in account.
//!
//! A start answers `{ceremony, options}` (`options` as WebAuthn's JSON); a
//! finish answers `{next}` (with the session cookie when it signs in). A
//! refusal is its status with the reason as text.

use axum::{
    http::header,
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{PublicKeyCredential, RegisterPublicKeyCredential};

use super::access::Door;
use super::account_pages::{safe_next, Me, Visit};
use crate::error::AppError;
use crate::server::accounts::passkeys::Registered;

pub fn routes<S>() -> Router<S>
where
    Door: axum::extract::FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/join/passkey/start", post(join_start))
        .route("/join/passkey/finish", post(register_finish))
        .route("/signin/passkey/start", post(sign_in_start))
        .route("/signin/passkey/finish", post(sign_in_finish))
        .route("/account/passkeys/start", post(add_start))
        .route("/account/passkeys/finish", post(add_finish))
}

#[derive(Serialize)]
struct Started<T> {
    ceremony: String,
    options: T,
}

#[derive(Serialize)]
struct Next<'a> {
    next: &'a str,
}

#[derive(Deserialize)]
struct JoinStart {
    token: String,
    name: String,
}

#[derive(Deserialize)]
struct SignInStart {
    name: String,
}

#[derive(Deserialize)]
struct RegisterFinish {
    ceremony: String,
    credential: RegisterPublicKeyCredential,
}

#[derive(Deserialize)]
struct SignInFinish {
    ceremony: String,
    credential: PublicKeyCredential,
    next: Option<String>,
}

fn started<T: Serialize>(result: Result<(String, T), AppError>) -> Response {
    match result {
        Ok((ceremony, options)) => Json(Started { ceremony, options }).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn join_start(visit: Visit, Json(body): Json<JoinStart>) -> Response {
    started(
        visit
            .accounts
            .passkey_join_start(&visit.origin, &body.token, &body.name, &visit.who.client)
            .await,
    )
}

async fn add_start(visit: Visit, Me(account): Me) -> Response {
    started(
        visit
            .accounts
            .passkey_add_start(&visit.origin, &account, &visit.who.client)
            .await,
    )
}

async fn sign_in_start(visit: Visit, Json(body): Json<SignInStart>) -> Response {
    started(
        visit
            .accounts
            .passkey_sign_in_start(&visit.origin, &body.name, &visit.who.client)
            .await,
    )
}

async fn register_finish(visit: Visit, Json(body): Json<RegisterFinish>) -> Response {
    finish_registration(&visit, None, body).await
}

async fn add_finish(visit: Visit, Me(account): Me, Json(body): Json<RegisterFinish>) -> Response {
    finish_registration(&visit, Some(&account), body).await
}

async fn finish_registration(
    visit: &Visit,
    account: Option<&crate::server::store::AccountRow>,
    body: RegisterFinish,
) -> Response {
    let registered = visit
        .accounts
        .passkey_register_finish(&visit.origin, &body.ceremony, &body.credential, account)
        .await;
    match registered {
        Ok(Registered::Joined(signed_in)) => (
            [(header::SET_COOKIE, visit.session_cookie(&signed_in))],
            Json(Next { next: "/" }),
        )
            .into_response(),
        Ok(Registered::Added) => Json(Next { next: "/account" }).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn sign_in_finish(visit: Visit, Json(body): Json<SignInFinish>) -> Response {
    let signed_in = visit
        .accounts
        .passkey_sign_in_finish(&visit.origin, &body.ceremony, &body.credential)
        .await;
    match signed_in {
        Ok(signed_in) => (
            [(header::SET_COOKIE, visit.session_cookie(&signed_in))],
            Json(Next {
                next: safe_next(body.next.as_deref()),
            }),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
