//! Sign in with OpenID Connect against a real provider run here
//! (`oidc-provider-mock`): an account is made by the join rule and linked
//! by issuer + subject (not by e-mail address); a signed-in account links
//! an identity; a wrong or replayed state, a wrong nonce and a token for
//! another audience are refused and change nothing.

use reqwest::StatusCode;
use serde_json::json;
use streamchat::server::config::{Config, OidcProviderConfig, Secret};

use crate::support::{accounts::*, oidc_provider::OidcProvider, TestApp};

const CLIENT_ID: &str = "streamchat-test";

fn with_provider(provider: &OidcProvider) -> impl FnOnce(&mut Config) {
    let issuer = provider.issuer.clone();
    move |config: &mut Config| {
        config.access.oidc = vec![OidcProviderConfig {
            id: "local".into(),
            name: "Local ID".into(),
            issuer,
            client_id: CLIENT_ID.into(),
            client_secret_env: None,
            client_secret: Some(Secret("a secret the provider accepts".into())),
            allowed_domains: vec!["example.com".into()],
            allowed_group: Some("chat".into()),
            groups_claim: "groups".into(),
        }];
    }
}

/// Our app's redirect to the provider: its URL, the state cookie kept.
async fn start(browser: &mut Browser) -> String {
    let started = browser.get("/signin/oidc/local?next=/t/lobby").await;
    assert_eq!(started.status(), StatusCode::SEE_OTHER);
    assert!(browser.oidc_state.is_some(), "the state rides in a cookie");
    location(&started).to_owned()
}

/// The callback's path and query, from where the provider sent the browser.
fn callback_path(back: &str) -> String {
    let url = reqwest::Url::parse(back).unwrap();
    assert_eq!(url.path(), "/signin/oidc/local/callback");
    format!("{}?{}", url.path(), url.query().unwrap())
}

/// The whole flow for `sub`: the callback's answer.
async fn sign_in_as(
    browser: &mut Browser,
    provider: &OidcProvider,
    sub: &str,
) -> reqwest::Response {
    let authorize = start(browser).await;
    let back = provider.authorize(&authorize, sub).await;
    browser.get(&callback_path(&back)).await
}

/// A provider knowing alice-1 (a verified example.com address), and the
/// app signing in with it.
async fn provider_with_alice() -> (OidcProvider, TestApp) {
    let provider = OidcProvider::start().await;
    let app = accounts_app(with_provider(&provider)).await;
    provider
        .set_user(
            "alice-1",
            json!({"email": "alice@example.com", "email_verified": true}),
        )
        .await;
    (provider, app)
}

async fn account_count(app: &TestApp) -> i64 {
    app.state.store.account_count().await.unwrap()
}

crate::both_backends! {
async fn signing_in_makes_an_account_by_the_rule_and_links_it_by_issuer_and_subject() {
    let provider = OidcProvider::start().await;
    let app = accounts_app(with_provider(&provider)).await;
    let mut admin = Browser::new(&app.url);
    set_up(&app, &mut admin, "Ann").await;
    provider
        .set_user("alice-1", json!({"email": "alice@example.com", "email_verified": true, "preferred_username": "Alice"}))
        .await;
    let page = Browser::new(&app.url).get("/signin").await.text().await.unwrap();
    assert!(page.contains("Sign in with Local ID"), "{page}");

    let mut alice = Browser::new(&app.url);
    let back = sign_in_as(&mut alice, &provider, "alice-1").await;
    assert_eq!(back.status(), StatusCode::SEE_OTHER, "{:?}", back.text().await);
    assert_eq!(location(&back), "/t/lobby");
    assert!(alice.session.is_some() && alice.oidc_state.is_none(), "signed in; the state cookie gone");
    let linked = app.state.store.oidc_account(&provider.issuer, "alice-1").await.unwrap();
    let account = linked.expect("linked by issuer and subject");
    assert_eq!(account.name, "Alice");
    assert_eq!(account.role, "member");
    assert!(alice.get("/account").await.text().await.unwrap().contains("Signed in as <strong>Alice</strong>"));

    // Her address changes at the provider: the same subject is the same account.
    provider.set_user("alice-1", json!({"email": "alice@elsewhere.org", "email_verified": true})).await;
    let mut again = Browser::new(&app.url);
    assert_eq!(sign_in_as(&mut again, &provider, "alice-1").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(account_count(&app).await, 2, "no second account");
    // Someone else with her old address is someone else (and, unverified, may not join).
    provider.set_user("mallory-9", json!({"email": "alice@example.com", "email_verified": false})).await;
    let mut mallory = Browser::new(&app.url);
    let refused = sign_in_as(&mut mallory, &provider, "mallory-9").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(mallory.session.is_none());
    assert_eq!(account_count(&app).await, 2);
    // The group claim lets one join too.
    provider.set_user("gus-2", json!({"groups": ["chat"], "preferred_username": "Alice"})).await;
    let mut gus = Browser::new(&app.url);
    assert_eq!(sign_in_as(&mut gus, &provider, "gus-2").await.status(), StatusCode::SEE_OTHER);
    let gus_account = app.state.store.oidc_account(&provider.issuer, "gus-2").await.unwrap().unwrap();
    assert_eq!(gus_account.name, "Alice 2", "a taken name gets a number");
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_account_links_an_identity_and_signs_in_with_it() {
    let provider = OidcProvider::start().await;
    let app = accounts_app(|c| {
        with_provider(&provider)(c);
        // No join rule: only linked accounts sign in.
        c.access.oidc[0].allowed_domains.clear();
        c.access.oidc[0].allowed_group = None;
    })
    .await;
    let mut ann = Browser::new(&app.url);
    set_up(&app, &mut ann, "Ann").await;
    provider
        .set_user(
            "ann-7",
            json!({"email": "ann@example.com", "email_verified": true}),
        )
        .await;
    // Unlinked, the identity is refused.
    let mut elsewhere = Browser::new(&app.url);
    assert_eq!(
        sign_in_as(&mut elsewhere, &provider, "ann-7")
            .await
            .status(),
        StatusCode::FORBIDDEN
    );

    let linking = ann.form("/account/oidc/local", &[]).await;
    assert_eq!(linking.status(), StatusCode::SEE_OTHER);
    let back = provider.authorize(location(&linking), "ann-7").await;
    let linked = ann.get(&callback_path(&back)).await;
    assert_eq!(linked.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&linked), "/account");
    let mut phone = Browser::new(&app.url);
    assert_eq!(
        sign_in_as(&mut phone, &provider, "ann-7").await.status(),
        StatusCode::SEE_OTHER
    );
    assert!(phone
        .get("/account")
        .await
        .text()
        .await
        .unwrap()
        .contains("<strong>Ann</strong>"));
    assert_eq!(account_count(&app).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_replayed_state_is_refused() {
    let (provider, app) = provider_with_alice().await;

    // The callback's state is not the one this browser started.
    let mut alice = Browser::new(&app.url);
    let authorize = start(&mut alice).await;
    let back = provider.authorize(&authorize, "alice-1").await;
    let forged = callback_path(&back).replace("state=", "state=x");
    let refused = alice.get(&forged).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("not started in this browser"));
    assert!(alice.session.is_none());

    // Another browser's flow: its state, without its cookie.
    let mut victim = Browser::new(&app.url);
    let authorize = start(&mut victim).await;
    let back = provider.authorize(&authorize, "alice-1").await;
    let mut attacker = Browser::new(&app.url);
    assert_eq!(
        attacker.get(&callback_path(&back)).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert!(attacker.session.is_none());

    // The right one works once; replayed, the state is gone.
    let state = victim.oidc_state.clone();
    assert_eq!(
        victim.get(&callback_path(&back)).await.status(),
        StatusCode::SEE_OTHER
    );
    assert!(victim.session.is_some());
    let mut replay = Browser::new(&app.url);
    replay.oidc_state = state;
    assert_eq!(
        replay.get(&callback_path(&back)).await.status(),
        StatusCode::BAD_REQUEST
    );
    assert!(replay.session.is_none());
    assert_eq!(account_count(&app).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_nonce_is_refused() {
    let (provider, app) = provider_with_alice().await;
    let mut alice = Browser::new(&app.url);
    let authorize = start(&mut alice).await;
    // The provider is asked with another nonce than the one this sign-in
    // stored: its ID token carries that one.
    let mut url = reqwest::Url::parse(&authorize).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "nonce" {
                "an-injected-nonce".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    assert!(
        pairs.iter().any(|(k, _)| k == "nonce"),
        "the app sends a nonce"
    );
    url.query_pairs_mut().clear().extend_pairs(&pairs);
    let back = provider.authorize(url.as_str(), "alice-1").await;
    let refused = alice.get(&callback_path(&back)).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert!(refused.text().await.unwrap().contains("nonce"));
    assert!(alice.session.is_none());
    assert_eq!(account_count(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_for_another_audience_is_refused() {
    let (provider, app) = provider_with_alice().await;
    let accounts = app.state.accounts.as_ref().unwrap();
    // The provider's token for this app passes the same check...
    let ours = provider.id_token_for(CLIENT_ID, "alice-1", "n-1").await;
    let identity = accounts.oidc_verify("local", &ours, "n-1").await.unwrap();
    assert_eq!(
        (identity.issuer.as_str(), identity.subject.as_str()),
        (provider.issuer.as_str(), "alice-1")
    );
    // ...and a real token of the same provider, issued to another app, fails it.
    let theirs = provider.id_token_for("another-app", "alice-1", "n-1").await;
    let refused = accounts
        .oidc_verify("local", &theirs, "n-1")
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("issued to another app"),
        "{refused}"
    );
    // As does ours with another sign-in's nonce.
    let refused = accounts
        .oidc_verify("local", &ours, "n-2")
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("nonce"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_in_progress_are_bounded_per_client_and_in_all_and_expire() {
    let provider = OidcProvider::start().await;
    // In all: two at once.
    let app = accounts_app(|c| {
        with_provider(&provider)(c);
        c.access.accounts.sign_ins_in_progress = 2;
    })
    .await;
    let mut browser = Browser::new(&app.url);
    start(&mut browser).await;
    start(&mut browser).await;
    let refused = browser.get("/signin/oidc/local").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    assert!(refused
        .text()
        .await
        .unwrap()
        .contains("Too many sign-ins are in progress"));
    let now = streamchat::server::now_ms();
    assert_eq!(
        app.state.store.count_challenges(now).await.unwrap(),
        2,
        "nothing stored past the cap"
    );
    // Expired ones are pruned (ten minutes on), and starting works again.
    let later = now + 11 * 60_000;
    let window = streamchat::server::store::SessionWindow {
        idle_before: 0,
        created_before: 0,
    };
    assert_eq!(
        app.state.store.prune_accounts(later, window).await.unwrap(),
        2
    );
    start(&mut browser).await;

    // Per client: its sign-in budget.
    let app = accounts_app(|c| {
        with_provider(&provider)(c);
        c.access.accounts.sign_ins_per_client_per_minute = 2;
    })
    .await;
    let mut browser = Browser::new(&app.url);
    start(&mut browser).await;
    start(&mut browser).await;
    let limited = browser.get("/signin/oidc/local").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(limited
        .text()
        .await
        .unwrap()
        .contains("Too many sign-in attempts"));
}
