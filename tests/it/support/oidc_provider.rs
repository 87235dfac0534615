//! A real OpenID Connect provider for the tests: PyPI's
//! `oidc-provider-mock` (authlib underneath: discovery, keys, RS256 ID
//! tokens, PKCE, nonces), run as a child process on a free port.
//! `scripts/test` installs it; `STREAMCHAT_OIDC_PROVIDER_MOCK` names the
//! program when it is elsewhere.

use std::{path::PathBuf, process::Stdio, time::Duration};

use reqwest::redirect::Policy;
use tokio::process::{Child, Command};

pub struct OidcProvider {
    pub issuer: String,
    pub http: reqwest::Client,
    _child: Child,
}

fn program() -> PathBuf {
    std::env::var_os("STREAMCHAT_OIDC_PROVIDER_MOCK")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME");
            PathBuf::from(home).join(".cache/streamchat/tools/py/bin/oidc-provider-mock")
        })
}

impl OidcProvider {
    /// Starts a provider that requires a nonce, and waits until its
    /// discovery document answers.
    pub async fn start() -> Self {
        let program = program();
        assert!(
            program.exists(),
            "{} is missing: scripts/test installs it (pip install oidc-provider-mock)",
            program.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&program)
            .args(["--port", &port.to_string(), "--require-nonce", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the OpenID Connect provider starts");
        let issuer = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap();
        let discovery = format!("{issuer}/.well-known/openid-configuration");
        crate::support::poll_until(
            Duration::from_secs(30),
            Duration::from_millis(50),
            "the OpenID Connect provider answers",
            || {
                let (http, discovery) = (http.clone(), discovery.clone());
                async move {
                    matches!(http.get(&discovery).send().await, Ok(r) if r.status().is_success())
                }
            },
            |up| *up,
        )
        .await;
        Self {
            issuer,
            http,
            _child: child,
        }
    }

    /// Sets a person's claims (the ID token carries them).
    pub async fn set_user(&self, sub: &str, claims: serde_json::Value) {
        let response = self
            .http
            .put(format!("{}/users/{sub}", self.issuer))
            .json(&claims)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }

    /// Signs `sub` in on the provider's authorization page at `authorize`
    /// (the URL our app sent the browser to); where the provider sends the
    /// browser back (the callback with its code and state).
    pub async fn authorize(&self, authorize: &str, sub: &str) -> String {
        let page = self.http.get(authorize).send().await.unwrap();
        assert_eq!(page.status(), 200, "the provider shows its sign-in form");
        let answer = self
            .http
            .post(authorize)
            .form(&[("sub", sub)])
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_redirection(), "{}", answer.status());
        answer.headers()["location"].to_str().unwrap().to_owned()
    }

    /// An ID token issued to `client_id` for `sub` with `nonce`, got as any
    /// app would get one (authorization code, then the token endpoint).
    pub async fn id_token_for(&self, client_id: &str, sub: &str, nonce: &str) -> String {
        let redirect = "http://localhost/callback";
        let authorize = reqwest::Url::parse_with_params(
            &format!("{}/oauth2/authorize", self.issuer),
            &[
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", redirect),
                ("scope", "openid email"),
                ("state", "s"),
                ("nonce", nonce),
            ],
        )
        .unwrap();
        let back = self.authorize(authorize.as_str(), sub).await;
        let code = reqwest::Url::parse(&back)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("a code");
        let tokens: serde_json::Value = self
            .http
            .post(format!("{}/oauth2/token", self.issuer))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", redirect),
                ("client_id", client_id),
                ("client_secret", "any"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens["id_token"].as_str().expect("an ID token").to_owned()
    }
}
