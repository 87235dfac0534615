//! The sign-in pages: plain HTML forms that work without JavaScript.
//!
//! - `GET/POST /signin`: name and password; `?next=` is where to go after.
//! - `GET/POST /setup` and `/join`: `?token=` is a setup or invite link;
//!   the form makes the account and signs it in.
//! - `GET /account`: who you are, sign out, sign out everywhere, and for an
//!   admin, a form that makes invite links (`POST /account/invites`).
//! - `POST /signout`, `POST /signout/everywhere`.
//!
//! A refused form is shown again with the reason and the refusal's status
//! (401, 404, 409, 429 with `Retry-After`), and nothing is changed.

use axum::{
    extract::{Query, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Extension, Form, Router,
};
use serde::Deserialize;

use super::access::{Door, Requester};
use super::plain_html::{attr, error_line, html, redirect, refused_form, text};
use crate::error::AppError;
use crate::server::{
    accounts::{cookie, Accounts, SignedIn, MAX_NAME_CHARS, MIN_PASSWORD_CHARS},
    store::{AccountRow, PasskeyRow, UsageRow},
};

pub fn routes<S>() -> Router<S>
where
    Door: axum::extract::FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/signin", get(sign_in_page).post(sign_in))
        .route("/setup", get(join_page).post(join))
        .route("/join", get(join_page).post(join))
        .route("/account", get(account_page))
        .route("/account/invites", post(invite))
        .route("/account/disabled", post(set_disabled))
        .route("/account/passkeys/remove", post(remove_passkey))
        .route("/signout", post(sign_out))
        .route("/signout/everywhere", post(sign_out_everywhere))
}

pub(super) fn accounts(door: &Door) -> Result<&Accounts, AppError> {
    door.accounts
        .as_ref()
        .ok_or_else(|| AppError::NotFound("This app has no built-in accounts.".into()))
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
}

#[derive(Deserialize)]
struct SignInForm {
    name: String,
    password: String,
    next: Option<String>,
}

async fn sign_in_page(State(door): State<Door>, Query(q): Query<Next>) -> Response {
    if let Err(e) = accounts(&door) {
        return e.into_response();
    }
    html(
        StatusCode::OK,
        "Sign in",
        &sign_in_form(&providers(&door), "", q.next.as_deref(), None),
    )
}

async fn sign_in(
    State(door): State<Door>,
    Extension(who): Extension<Requester>,
    Form(form): Form<SignInForm>,
) -> Response {
    let next = form.next.as_deref();
    let signed_in = async {
        accounts(&door)?
            .sign_in(&form.name, &form.password, &who.client)
            .await
    };
    match signed_in.await {
        Ok(signed_in) => signed_in_response(&door, &who, &signed_in, safe_next(next)),
        Err(e) => refused_form(
            &e,
            "Sign in",
            &sign_in_form(&providers(&door), &form.name, next, Some(&e)),
        ),
    }
}

#[derive(Deserialize)]
struct LinkQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
struct JoinForm {
    token: String,
    name: String,
    password: String,
}

async fn join_page(
    State(door): State<Door>,
    uri: axum::http::Uri,
    Query(q): Query<LinkQuery>,
) -> Response {
    if let Err(e) = accounts(&door) {
        return e.into_response();
    }
    let token = q.token.unwrap_or_default();
    html(
        StatusCode::OK,
        join_title(uri.path()),
        &join_form(uri.path(), &token, "", None),
    )
}

async fn join(
    State(door): State<Door>,
    Extension(who): Extension<Requester>,
    uri: axum::http::Uri,
    Form(form): Form<JoinForm>,
) -> Response {
    let joined = async {
        accounts(&door)?
            .join(&form.token, &form.name, &form.password)
            .await
    };
    match joined.await {
        Ok(signed_in) => signed_in_response(&door, &who, &signed_in, "/"),
        Err(e) => {
            let body = join_form(uri.path(), &form.token, &form.name, Some(&e));
            refused_form(&e, join_title(uri.path()), &body)
        }
    }
}

fn join_title(path: &str) -> &'static str {
    if path == "/setup" {
        "Set up streamchat"
    } else {
        "Join streamchat"
    }
}

/// The signed-in account a request came with (the door puts it in the
/// request's extensions); 401 without one.
pub(super) struct Me(pub AccountRow);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Me {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, AppError> {
        parts
            .extensions
            .get::<AccountRow>()
            .cloned()
            .map(Me)
            .ok_or_else(|| AppError::Unauthorized("Sign in first.".into()))
    }
}

/// A request to the sign-in ceremonies: the accounts service (404 where
/// the app has none), who asks, and this site's origin as the browser
/// named it (a passkey's relying party, OpenID Connect's redirect).
pub(super) struct Visit {
    pub accounts: Accounts,
    pub who: Requester,
    pub origin: String,
}

impl<S> axum::extract::FromRequestParts<S> for Visit
where
    Door: axum::extract::FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, AppError> {
        let door = <Door as axum::extract::FromRef<S>>::from_ref(state);
        let accounts = accounts(&door)?.clone();
        let who = parts
            .extensions
            .get::<Requester>()
            .cloned()
            .ok_or_else(|| {
                AppError::internal("a request reached the sign-in pages past the door")
            })?;
        let origin = origin(&parts.headers, who.https);
        Ok(Self {
            accounts,
            who,
            origin,
        })
    }
}

impl Visit {
    /// `Set-Cookie` for the session just made.
    pub fn session_cookie(&self, signed_in: &SignedIn) -> HeaderValue {
        session_cookie(&self.accounts, &self.who, signed_in)
    }
}

async fn account_page(State(door): State<Door>, Me(account): Me) -> Response {
    account_view(&door, &account, None, None).await
}

/// The account page: `made` is a new invite link to show, `error` why the
/// form just sent was refused (the page comes back with its status).
async fn account_view(
    door: &Door,
    account: &AccountRow,
    made: Option<&str>,
    error: Option<&AppError>,
) -> Response {
    let admin = account.role == "admin";
    let read = async {
        let accounts = accounts(door)?;
        let people = if admin {
            accounts.list(account).await?
        } else {
            Vec::new()
        };
        let everyone = if admin {
            accounts.usage(account, true).await?
        } else {
            Vec::new()
        };
        let passkeys = accounts.passkey_list(account).await?;
        let methods = sign_in_methods(&passkeys, &accounts.oidc_buttons());
        Ok::<_, AppError>((
            people,
            accounts.usage(account, false).await?,
            everyone,
            methods,
        ))
    };
    let (people, mine, everyone, methods) = match read.await {
        Ok(read) => read,
        Err(e) => return e.into_response(),
    };
    let mut body = account_body(account, made, &people, error);
    body.push_str(&methods);
    body.push_str(&usage_table("Your usage", &mine, false));
    if admin {
        body.push_str(&usage_table("Everyone's usage", &everyone, true));
    }
    match error {
        Some(e) => refused_form(e, "Your account", &body),
        None => html(StatusCode::OK, "Your account", &body),
    }
}

#[derive(Deserialize)]
struct DisableForm {
    id: i64,
    disabled: bool,
}

async fn set_disabled(
    State(door): State<Door>,
    Me(account): Me,
    Form(form): Form<DisableForm>,
) -> Response {
    let done = async {
        accounts(&door)?
            .set_disabled(&account, form.id, form.disabled)
            .await
    };
    account_view(&door, &account, None, done.await.err().as_ref()).await
}

#[derive(Deserialize)]
struct InviteForm {
    role: String,
    uses: u32,
    hours: f64,
}

async fn invite(
    State(door): State<Door>,
    headers: HeaderMap,
    Extension(who): Extension<Requester>,
    Me(account): Me,
    Form(form): Form<InviteForm>,
) -> Response {
    let made = async {
        accounts(&door)?
            .invite(&account, &form.role, form.uses, form.hours)
            .await
    };
    match made.await {
        Ok(token) => {
            let link = format!("{}/join?token={token}", origin(&headers, who.https));
            account_view(&door, &account, Some(&link), None).await
        }
        Err(e) => account_view(&door, &account, None, Some(&e)).await,
    }
}

async fn sign_out(State(door): State<Door>, headers: HeaderMap) -> Response {
    if let (Ok(accounts), Some(token)) = (accounts(&door), cookie::session_token(&headers)) {
        if let Err(e) = accounts.sign_out(&token).await {
            return e.into_response();
        }
    }
    signed_out_response()
}

async fn sign_out_everywhere(
    State(door): State<Door>,
    account: Option<Extension<AccountRow>>,
) -> Response {
    let (Ok(accounts), Some(Extension(account))) = (accounts(&door), account) else {
        return signed_out_response();
    };
    match accounts.sign_out_everywhere(&account).await {
        Ok(_) => signed_out_response(),
        Err(e) => e.into_response(),
    }
}

/// 303 to `to`, with the new session's cookie.
pub(super) fn signed_in_response(
    door: &Door,
    who: &Requester,
    signed_in: &SignedIn,
    to: &str,
) -> Response {
    let Some(accounts) = door.accounts.as_ref() else {
        return AppError::Internal.into_response();
    };
    let mut response = redirect(to);
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(accounts, who, signed_in));
    response
}

/// `Set-Cookie` for a new session: `Secure` when served over HTTPS (or as
/// configured).
fn session_cookie(accounts: &Accounts, who: &Requester, signed_in: &SignedIn) -> HeaderValue {
    let secure = accounts.config().secure_cookie.unwrap_or(who.https);
    cookie::set_session(
        Some(&signed_in.token),
        accounts.session_max_age().as_secs(),
        secure,
    )
}

fn signed_out_response() -> Response {
    let mut response = redirect("/signin");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie::set_session(None, 0, false));
    response
}

/// Where to go after signing in: a path of this site, never another site
/// (`//host`, `/\host` and schemes are refused).
pub fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && n.len() <= 2000
                && !n.chars().any(char::is_control) =>
        {
            n
        }
        _ => "/",
    }
}

/// The site's origin as the browser named it, for links shown on a page.
pub(super) fn origin(headers: &HeaderMap, https: bool) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// The sign-in page's providers: each one's id and name.
fn providers(door: &Door) -> Vec<(String, String)> {
    door.accounts
        .as_ref()
        .map(|a| a.oidc_buttons())
        .unwrap_or_default()
}

fn sign_in_form(
    providers: &[(String, String)],
    name: &str,
    next: Option<&str>,
    error: Option<&AppError>,
) -> String {
    let next = safe_next(next);
    let providers: String = providers
        .iter()
        .map(|(id, provider)| {
            format!(
                r#"<p><a class="button" href="/signin/oidc/{id}?next={next}">Sign in with {provider}</a></p>"#,
                id = attr(id),
                next = attr(&percent_encoding::utf8_percent_encode(next, percent_encoding::NON_ALPHANUMERIC).to_string()),
                provider = text(provider),
            )
        })
        .collect();
    format!(
        r#"<h1>Sign in</h1>{error}
<form method="post" action="/signin" class="account-form" data-passkey-form="sign-in">
<label>Name <input name="name" autocomplete="username webauthn" required maxlength="{MAX_NAME_CHARS}" value="{name}"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<input type="hidden" name="next" value="{next}">
<button type="submit">Sign in</button>
<button type="button" data-passkey="sign-in" hidden>Sign in with a passkey</button>
<p class="form-error" role="alert" data-passkey-error></p>
</form>
{providers}
<p class="hint">No account? Ask an admin for an invite link.</p>{PASSKEY_SCRIPT}"#,
        error = error_line(error),
        name = attr(name),
        next = attr(next),
    )
}

/// The passkey buttons' script (plain JavaScript: the ceremonies need the
/// browser's WebAuthn API); the buttons stay hidden without it.
const PASSKEY_SCRIPT: &str = r#"<script src="/passkeys.js" defer></script>"#;

fn join_form(path: &str, token: &str, name: &str, error: Option<&AppError>) -> String {
    let intro = if path == "/setup" {
        "This link makes the first account, an admin. It works once."
    } else {
        "Choose the name others will see on your messages, and a password."
    };
    format!(
        r#"<h1>{title}</h1><p class="hint">{intro}</p>{error}
<form method="post" action="{path}" class="account-form" data-passkey-form="join">
<input type="hidden" name="token" value="{token}">
<label>Name <input name="name" autocomplete="username" required maxlength="{MAX_NAME_CHARS}" value="{name}"></label>
<label>Password <input name="password" type="password" autocomplete="new-password" minlength="{MIN_PASSWORD_CHARS}"></label>
<button type="submit">Make my account</button>
<button type="button" data-passkey="join" hidden>Make my account with a passkey</button>
<p class="form-error" role="alert" data-passkey-error></p>
</form>{PASSKEY_SCRIPT}"#,
        title = join_title(path),
        error = error_line(error),
        path = if path == "/setup" { "/setup" } else { "/join" },
        token = attr(token),
        name = attr(name),
    )
}

fn account_body(
    account: &AccountRow,
    new_link: Option<&str>,
    people: &[AccountRow],
    error: Option<&AppError>,
) -> String {
    let invite = if account.role == "admin" {
        let made = new_link.map_or_else(String::new, |link| {
            format!(
                r#"<p role="status">New invite link (shown once): <code class="invite-link">{}</code></p>"#,
                text(link)
            )
        });
        format!(
            r#"<h2>Invite people</h2>{made}
<form method="post" action="/account/invites" class="account-form">
<label>Role <select name="role"><option value="member">member</option><option value="admin">admin</option></select></label>
<label>Uses <input name="uses" type="number" min="1" max="1000" value="1"></label>
<label>Valid for (hours) <input name="hours" type="number" min="1" max="720" value="72"></label>
<button type="submit">Make an invite link</button>
</form>
<h2>People</h2>
<ul class="people">{people}</ul>"#,
            people = people_list(account, people),
        )
    } else {
        String::new()
    };
    format!(
        r#"<h1>Your account</h1>{error}
<p>Signed in as <strong>{name}</strong> ({role}).</p>
<form method="post" action="/signout" class="inline"><button type="submit">Sign out</button></form>
<form method="post" action="/signout/everywhere" class="inline"><button type="submit">Sign out everywhere</button></form>
{invite}
<p><a href="/">All threads</a></p>"#,
        error = error_line(error),
        name = text(&account.name),
        role = text(&account.role),
    )
}

/// The account's passkeys (each with a Remove button, and one adding
/// another) and a form per OpenID Connect provider linking it.
fn sign_in_methods(passkeys: &[PasskeyRow], providers: &[(String, String)]) -> String {
    let held = match passkeys.len() {
        0 => "No passkeys yet.".to_owned(),
        1 => "1 passkey.".to_owned(),
        n => format!("{n} passkeys."),
    };
    let list: String = passkeys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            format!(
                r#"<li>Passkey {n}, added {added}, last used {used} <form method="post" action="/account/passkeys/remove" class="inline"><input type="hidden" name="credential" value="{id}"><button type="submit" class="deny" aria-label="Remove passkey {n}">Remove</button></form></li>"#,
                n = i + 1,
                added = day_of(key.created_at / 86_400_000),
                used = day_of(key.last_used_at / 86_400_000),
                id = attr(&key.credential_id),
            )
        })
        .collect();
    let links: String = providers
        .iter()
        .map(|(id, name)| {
            format!(
                r#"<form method="post" action="/account/oidc/{id}" class="inline"><button type="submit">Link {name}</button></form>"#,
                id = attr(id),
                name = text(name),
            )
        })
        .collect();
    format!(
        r#"<h2>Sign-in methods</h2>
<p data-passkey-form="add"><span class="passkey-count">{held}</span> <button type="button" data-passkey="add" hidden>Add a passkey</button></p>
<ul class="passkeys" aria-label="Passkeys">{list}</ul>
<p class="form-error" role="alert" data-passkey-error></p>{links}{PASSKEY_SCRIPT}"#
    )
}

#[derive(Deserialize)]
struct RemovePasskeyForm {
    credential: String,
}

async fn remove_passkey(
    State(door): State<Door>,
    Me(account): Me,
    Form(form): Form<RemovePasskeyForm>,
) -> Response {
    let done = async {
        accounts(&door)?
            .passkey_remove(&account, &form.credential)
            .await
    };
    match done.await {
        Ok(()) => redirect("/account"),
        Err(e) => account_view(&door, &account, None, Some(&e)).await,
    }
}

/// `YYYY-MM-DD` of a day counted from 1970-01-01.
fn day_of(day: i64) -> String {
    let date_time = crate::model::format_datetime_utc(day.saturating_mul(86_400_000));
    date_time.split(' ').next().unwrap_or_default().to_owned()
}

/// Usage by day and bot (and person), as a table.
fn usage_table(title: &str, rows: &[UsageRow], people: bool) -> String {
    if rows.is_empty() {
        return format!(r#"<h2>{title}</h2><p class="hint">No replies yet.</p>"#);
    }
    let person_head = if people {
        "<th scope=\"col\">Person</th>"
    } else {
        ""
    };
    let body: String = rows
        .iter()
        .map(|row| {
            let person = if people {
                format!("<td>{}</td>", text(&row.person))
            } else {
                String::new()
            };
            format!(
                "<tr><td>{day}</td>{person}<td>@{bot}</td><td>{replies}</td><td>{prompt}</td><td>{completion}</td></tr>",
                day = day_of(row.day),
                bot = text(&row.bot),
                replies = row.replies,
                prompt = row.prompt_tokens,
                completion = row.completion_tokens,
            )
        })
        .collect();
    format!(
        r#"<h2>{title}</h2>
<table class="usage-table" aria-label="{title}"><thead><tr><th scope="col">Day (UTC)</th>{person_head}<th scope="col">Bot</th><th scope="col">Replies</th><th scope="col">Prompt tokens</th><th scope="col">Completion tokens</th></tr></thead>
<tbody>{body}</tbody></table>"#
    )
}

/// Each account with a Disable (or Enable) button; not for oneself.
fn people_list(me: &AccountRow, people: &[AccountRow]) -> String {
    people
        .iter()
        .map(|person| {
            let (state, action, value) = if person.disabled {
                (" (disabled)", "Enable", "false")
            } else {
                ("", "Disable", "true")
            };
            let button = if person.id == me.id {
                String::new()
            } else {
                format!(
                    r#" <form method="post" action="/account/disabled" class="inline"><input type="hidden" name="id" value="{id}"><input type="hidden" name="disabled" value="{value}"><button type="submit" aria-label="{action} {label}">{action}</button></form>"#,
                    id = person.id,
                    label = attr(&person.name),
                )
            };
            format!(
                "<li>{name} ({role}){state}{button}</li>",
                name = text(&person.name),
                role = text(&person.role),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/t/abc?m=1")), "/t/abc?m=1");
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example",
            "t/x",
            "/a\nb",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn what_a_person_typed_is_escaped_in_the_form() {
        let page = sign_in_form(&[], "\"><script>x</script>", Some("/t/\"x"), None);
        assert!(!page.contains("<script>"));
        assert!(page.contains("&quot;&gt;&lt;script&gt;"));
    }
}
