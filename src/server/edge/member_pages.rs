//! A private thread's members page, plain HTML (works without JavaScript):
//!
//! - `GET /t/{id}/members`: the members, for any of them; the owner also
//!   gets a form to add someone by name and a Remove button per member.
//! - `POST /t/{id}/members`: `action=add|remove`, `name`; the owner only
//!   (403 for another member). A removed member's open streams of the
//!   thread close within `revalidate_secs`, on every instance.
//!
//! To anyone who is not a member, the page is the 404 of an unknown thread.

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Extension, Form, Router,
};
use serde::Deserialize;

use super::access::Requester;
use super::plain_html::{attr, error_line, html, redirect, refused_form, text};
use crate::error::AppError;
use crate::model::Thread;
use crate::server::{accounts::Members, store::MemberRow};

pub fn routes<S>() -> Router<S>
where
    Members: axum::extract::FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    Router::new().route("/t/{id}/members", get(members_page).post(change))
}

#[derive(Deserialize)]
struct ChangeForm {
    action: String,
    #[serde(default)]
    name: String,
}

async fn members_page(
    State(members): State<Members>,
    Path(id): Path<String>,
    Extension(who): Extension<Requester>,
) -> Response {
    view(&members, &id, &who, None).await
}

async fn change(
    State(members): State<Members>,
    Path(id): Path<String>,
    Extension(who): Extension<Requester>,
    Form(form): Form<ChangeForm>,
) -> Response {
    let by = who.identity.as_deref();
    let done = match form.action.as_str() {
        "add" => members.add(&id, by, &form.name).await.map(drop),
        "remove" => members.remove(&id, by, &form.name).await,
        _ => Err(AppError::Invalid("Add or remove a member.".into())),
    };
    match done {
        // Back to the page with a GET, so a reload does not repeat the form.
        Ok(()) => redirect(&format!("/t/{}/members", urlencoding(&id))),
        Err(e) => view(&members, &id, &who, Some(&e)).await,
    }
}

/// The page; `error` is why the form just sent was refused (the page comes
/// back with the refusal's status).
async fn view(members: &Members, id: &str, who: &Requester, error: Option<&AppError>) -> Response {
    let (thread, list) = match members.list(id, who.identity.as_deref()).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    let body = page_body(&thread, &list, who.identity.as_deref(), error);
    let title = format!("Members of {}", thread.title);
    match error {
        Some(e) => refused_form(e, &title, &body),
        None => html(StatusCode::OK, &title, &body),
    }
}

fn page_body(
    thread: &Thread,
    list: &[MemberRow],
    me: Option<&str>,
    error: Option<&AppError>,
) -> String {
    let owner = thread.owner.as_deref();
    let mine = owner.is_some() && owner == me;
    let path = format!("/t/{}", urlencoding(&thread.id));
    let rows: String = list
        .iter()
        .map(|m| {
            let remove = (mine && !m.owner).then(|| {
                format!(
                    r#" <form method="post" class="inline"><input type="hidden" name="action" value="remove"><input type="hidden" name="name" value="{name}"><button type="submit" class="deny" aria-label="Remove {name}">Remove</button></form>"#,
                    name = attr(&m.name)
                )
            });
            format!(
                "<li>{}{}{}</li>",
                text(&m.name),
                if m.owner { " (owner)" } else { "" },
                remove.unwrap_or_default()
            )
        })
        .collect();
    let add = if mine {
        r#"<form method="post" class="stack"><input type="hidden" name="action" value="add"><label>Add a member by name <input name="name" required maxlength="64" autocomplete="off"></label><button type="submit">Add</button></form>"#.to_owned()
    } else {
        format!(
            "<p>Only {} adds and removes members.</p>",
            text(owner.unwrap_or("its owner"))
        )
    };
    format!(
        r#"<h1>Members of {title}</h1>{error}<p>This thread is private: only its members see it. <a href="{path}">Back to the thread</a></p><ul class="members" aria-label="Members">{rows}</ul>{add}"#,
        title = text(&thread.title),
        error = error_line(error),
        path = attr(&path),
    )
}

/// A thread id in a path (ids we make are hex; any other is escaped).
fn urlencoding(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
