//! Built-in accounts as a browser meets them, for the tests of accounts
//! and private threads: a browser that keeps its session cookie, the first
//! admin through the setup link, invites and sign-in.

use std::time::Duration;

use reqwest::{header, redirect::Policy, StatusCode};
use streamchat::server::config::{AccessMode, Config};
use streamchat::server::state::AppState;

use super::{spawn_app_with, FakeProvider, Scripted, TestApp};

pub fn accounts_mode(config: &mut Config) {
    config.access.mode = Some(AccessMode::Accounts);
}

pub async fn accounts_app(configure: impl FnOnce(&mut Config)) -> TestApp {
    let fake = FakeProvider::with(Scripted::words(3, Duration::ZERO)).await;
    accounts_app_with(fake, configure).await
}

pub async fn accounts_app_with(fake: FakeProvider, configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with(fake, |config| {
        accounts_mode(config);
        configure(config);
    })
    .await
}

/// One browser: no redirects followed, its session cookie kept by hand.
pub struct Browser {
    http: reqwest::Client,
    url: String,
    pub session: Option<String>,
    /// An OpenID Connect flow's state cookie.
    pub oidc_state: Option<String>,
}

impl Browser {
    pub fn new(url: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            url: url.to_owned(),
            session: None,
            oidc_state: None,
        }
    }

    pub fn keep_cookie(&mut self, response: &reqwest::Response) {
        for line in response.headers().get_all(header::SET_COOKIE) {
            let line = line.to_str().unwrap();
            let (name, rest) = line.split_once('=').unwrap();
            let value = rest.split(';').next().unwrap();
            let kept = (!value.is_empty()).then(|| value.to_owned());
            match name {
                "streamchat_session" => self.session = kept,
                "streamchat_oidc" => self.oidc_state = kept,
                other => panic!("an unexpected cookie {other}"),
            }
        }
    }

    pub fn with_cookie(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let mut cookies = Vec::new();
        if let Some(token) = &self.session {
            cookies.push(format!("streamchat_session={token}"));
        }
        if let Some(state) = &self.oidc_state {
            cookies.push(format!("streamchat_oidc={state}"));
        }
        if cookies.is_empty() {
            request
        } else {
            request.header(header::COOKIE, cookies.join("; "))
        }
    }

    pub async fn get(&mut self, path: &str) -> reqwest::Response {
        let request = self
            .http
            .get(format!("{}{path}", self.url))
            .header(header::ACCEPT, "text/html");
        let response = self.with_cookie(request).send().await.unwrap();
        self.keep_cookie(&response);
        response
    }

    pub async fn form(&mut self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let request = self
            .http
            .post(format!("{}{path}", self.url))
            .header(header::ACCEPT, "text/html")
            .form(fields);
        let response = self.with_cookie(request).send().await.unwrap();
        self.keep_cookie(&response);
        response
    }

    /// A GET as a script asks (JSON).
    pub async fn get_json(&self, path: &str) -> reqwest::Response {
        let request = self
            .http
            .get(format!("{}{path}", self.url))
            .header(header::ACCEPT, "application/json");
        self.with_cookie(request).send().await.unwrap()
    }

    /// An event stream's answer, whatever it is.
    pub async fn get_events(&self, path: &str) -> reqwest::Response {
        let request = self
            .http
            .get(format!("{}{path}", self.url))
            .header(header::ACCEPT, "text/event-stream");
        self.with_cookie(request).send().await.unwrap()
    }

    /// An event stream, its first bytes read (it is open).
    pub async fn subscribe(&self, path: &str) -> reqwest::Response {
        let request = self
            .http
            .get(format!("{}{path}", self.url))
            .header(header::ACCEPT, "text/event-stream");
        let mut response = self.with_cookie(request).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            response.chunk().await.unwrap().is_some(),
            "{path} sends a first event"
        );
        response
    }

    /// A server function, as a hydrated page calls it.
    pub async fn call(&self, function: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let request = self
            .http
            .post(format!("{}/api/{function}", self.url))
            .header(header::ACCEPT, "application/json")
            .form(fields);
        self.with_cookie(request).send().await.unwrap()
    }
}

pub fn location(response: &reqwest::Response) -> &str {
    response.headers()[header::LOCATION].to_str().unwrap()
}

/// Makes the first admin through the setup link; returns the token used.
pub async fn set_up(app: &TestApp, browser: &mut Browser, name: &str) -> String {
    set_up_on(&app.state, browser, name).await
}

pub async fn set_up_on(state: &AppState, browser: &mut Browser, name: &str) -> String {
    let accounts = state.accounts.as_ref().expect("accounts mode");
    let token = accounts
        .setup_link()
        .await
        .unwrap()
        .expect("no account yet");
    let page = browser.get(&format!("/setup?token={token}")).await;
    assert_eq!(page.status(), StatusCode::OK);
    let made = browser
        .form(
            "/setup",
            &[
                ("token", &token),
                ("name", name),
                ("password", "correct horse"),
            ],
        )
        .await;
    assert_eq!(
        made.status(),
        StatusCode::SEE_OTHER,
        "{:?}",
        made.text().await
    );
    assert_eq!(location(&made), "/");
    assert!(browser.session.is_some(), "the setup signs the admin in");
    token
}

/// The link an admin's account page shows after making an invite.
pub fn invite_token(page: &str) -> String {
    page.split("/join?token=")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the page shows the link")
        .to_owned()
}

/// `admin` invites a member, who joins as `name` (password "<name>s password").
pub async fn invite_member(app: &TestApp, admin: &mut Browser, name: &str) -> Browser {
    let made = admin
        .form(
            "/account/invites",
            &[("role", "member"), ("uses", "1"), ("hours", "1")],
        )
        .await
        .text()
        .await
        .unwrap();
    let mut member = Browser::new(&app.url);
    let password = format!("{}s password", name.to_lowercase());
    let joined = member
        .form(
            "/join",
            &[
                ("token", &invite_token(&made)),
                ("name", name),
                ("password", &password),
            ],
        )
        .await;
    assert_eq!(joined.status(), StatusCode::SEE_OTHER);
    member
}

pub async fn sign_in(browser: &mut Browser, name: &str, password: &str) -> reqwest::Response {
    browser
        .form(
            "/signin",
            &[("name", name), ("password", password), ("next", "/t/lobby")],
        )
        .await
}

/// Reads `stream` until the server closes it; how long that took, or
/// `None` if it was still open after `limit`.
pub async fn closed_within(stream: &mut reqwest::Response, limit: Duration) -> Option<Duration> {
    let started = std::time::Instant::now();
    let read_to_end = async { while let Ok(Some(_)) = stream.chunk().await {} };
    tokio::time::timeout(limit, read_to_end).await.ok()?;
    Some(started.elapsed())
}
