//! Built-in accounts (`access.mode = "accounts"`), tried as a browser
//! would: the setup link makes the first admin once, sign-in with a
//! password, sessions in the database, invites, sign out (everywhere), and
//! the hostile cases: a reused or made-up link, a wrong password, a
//! tampered cookie, too many attempts, an expired session.

use reqwest::{header, StatusCode};
use streamchat::server::config::{AccessMode, Config};
use streamchat::server::store::SessionWindow;

use std::time::Duration;

use crate::support::{
    accounts::*,
    pg::{node_config, spawn_node, PgDb},
    FakeProvider, Scripted, TestApp,
};

crate::both_backends! {
async fn the_setup_link_makes_the_first_admin_once() {
    let app = accounts_app(|_| {}).await;
    let mut ann = Browser::new(&app.url);
    let token = set_up(&app, &mut ann, "Ann").await;
    let account = ann.get("/account").await;
    assert_eq!(account.status(), StatusCode::OK);
    let text = account.text().await.unwrap();
    assert!(text.contains("<strong>Ann</strong> (admin)"), "{text}");

    // The same link again, from another browser: refused, nothing made.
    let mut mallory = Browser::new(&app.url);
    let again = mallory
        .form("/setup", &[("token", &token), ("name", "Mallory"), ("password", "12345678")])
        .await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    assert!(again.text().await.unwrap().contains("This link does not work"));
    assert!(mallory.session.is_none());
    // A made-up link, and a second setup link once an account exists.
    let made_up = mallory
        .form("/setup", &[("token", "AAAA"), ("name", "Mallory"), ("password", "12345678")])
        .await;
    assert_eq!(made_up.status(), StatusCode::NOT_FOUND);
    let accounts = app.state.accounts.as_ref().unwrap();
    assert_eq!(accounts.setup_link().await.unwrap(), None);
    assert_eq!(app.state.store.account_count().await.unwrap(), 1);
}
}

crate::both_backends! {
async fn without_a_session_only_the_sign_in_pages_answer() {
    let app = accounts_app(|_| {}).await;
    let mut visitor = Browser::new(&app.url);
    let home = visitor.get("/t/lobby?m=3").await;
    assert_eq!(home.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&home), "/signin?next=%2Ft%2Flobby%3Fm%3D3");
    let listed = visitor.call("list_threads", &[]).await;
    assert_eq!(listed.status(), StatusCode::UNAUTHORIZED);
    let sent = visitor
        .call("send_message", &[("thread", "lobby"), ("author", "Ann"), ("body", "hi")])
        .await;
    assert_eq!(sent.status(), StatusCode::UNAUTHORIZED);
    let events = visitor.get("/api/threads/lobby/events").await;
    assert_eq!(events.status(), StatusCode::UNAUTHORIZED);
    let export = visitor.get("/t/lobby/export.md").await;
    assert_eq!(export.status(), StatusCode::SEE_OTHER);
    assert_eq!(visitor.get("/signin").await.status(), StatusCode::OK);
    assert_eq!(visitor.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(app.message_count().await, 0, "nothing was posted");
}
}

crate::both_backends! {
async fn a_password_signs_in_and_the_account_is_the_author() {
    let app = accounts_app(|_| {}).await;
    let mut setup = Browser::new(&app.url);
    set_up(&app, &mut setup, "Ann").await;

    let mut ann = Browser::new(&app.url);
    let wrong = sign_in(&mut ann, "Ann", "wrong horse").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.text().await.unwrap().contains("That name and password do not match."));
    let unknown = sign_in(&mut ann, "Nobody", "correct horse").await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert!(ann.session.is_none());

    // Any letter case of the name; back to where the sign-in was asked for.
    let signed_in = sign_in(&mut ann, "aNN", "correct horse").await;
    assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&signed_in), "/t/lobby");
    let cookie = signed_in.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    for part in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(part), "{cookie}");
    }

    // The pages say who is signed in and link to the account page.
    let page = ann.get("/t/lobby").await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<a href="/account" rel="external">Signed in as Ann</a>"#), "{html}");
    let home = ann.get("/").await.text().await.unwrap();
    assert!(home.contains("Your account"));

    // The form's name field is ignored: the account is the author.
    let sent = ann
        .call("send_message", &[("thread", "lobby"), ("author", "Mallory"), ("body", "hello")])
        .await;
    assert!(sent.status().is_success(), "{}", sent.status());
    let ids = app.message_ids("lobby").await;
    let message = app.message(ids[0]).await;
    assert_eq!(message.author, "Ann");

    // A tampered cookie is no session.
    let mut forged = Browser::new(&app.url);
    let mut token = ann.session.clone().unwrap();
    let last = if token.ends_with('A') { "B" } else { "A" };
    token.replace_range(token.len() - 1.., last);
    forged.session = Some(token);
    assert_eq!(forged.call("list_threads", &[]).await.status(), StatusCode::UNAUTHORIZED);
    forged.session = Some("a;b=c".into());
    assert_eq!(forged.call("list_threads", &[]).await.status(), StatusCode::UNAUTHORIZED);
}
}

crate::both_backends! {
async fn signing_out_ends_the_session_and_everywhere_ends_them_all() {
    let app = accounts_app(|_| {}).await;
    let mut laptop = Browser::new(&app.url);
    set_up(&app, &mut laptop, "Ann").await;
    let mut phone = Browser::new(&app.url);
    assert_eq!(sign_in(&mut phone, "Ann", "correct horse").await.status(), StatusCode::SEE_OTHER);
    let mut tablet = Browser::new(&app.url);
    assert_eq!(sign_in(&mut tablet, "Ann", "correct horse").await.status(), StatusCode::SEE_OTHER);

    // Signing out on the tablet ends that session only.
    let tablet_token = tablet.session.clone().unwrap();
    let out = tablet.form("/signout", &[]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(out.headers()[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
    tablet.session = Some(tablet_token);
    assert_eq!(tablet.call("list_threads", &[]).await.status(), StatusCode::UNAUTHORIZED);
    assert!(phone.call("list_threads", &[]).await.status().is_success());

    // Everywhere, from the laptop: the phone is signed out too.
    let phone_token = phone.session.clone().unwrap();
    assert_eq!(laptop.form("/signout/everywhere", &[]).await.status(), StatusCode::SEE_OTHER);
    phone.session = Some(phone_token);
    assert_eq!(phone.call("list_threads", &[]).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(laptop.call("list_threads", &[]).await.status(), StatusCode::UNAUTHORIZED);
}
}

crate::both_backends! {
async fn an_admin_invites_and_the_invite_is_used_up() {
    let app = accounts_app(|_| {}).await;
    let mut ann = Browser::new(&app.url);
    set_up(&app, &mut ann, "Ann").await;
    let made = ann
        .form("/account/invites", &[("role", "member"), ("uses", "1"), ("hours", "72")])
        .await;
    assert_eq!(made.status(), StatusCode::OK);
    let token = invite_token(&made.text().await.unwrap());

    let mut bob = Browser::new(&app.url);
    assert_eq!(bob.get(&format!("/join?token={token}")).await.status(), StatusCode::OK);
    // The admin's name in another letter case is taken; the use is not spent.
    let taken = bob
        .form("/join", &[("token", &token), ("name", "ANN"), ("password", "bobs password")])
        .await;
    assert_eq!(taken.status(), StatusCode::CONFLICT);
    let short = bob
        .form("/join", &[("token", &token), ("name", "Bob"), ("password", "short")])
        .await;
    assert_eq!(short.status(), StatusCode::BAD_REQUEST);
    let joined = bob
        .form("/join", &[("token", &token), ("name", "Bob"), ("password", "bobs password")])
        .await;
    assert_eq!(joined.status(), StatusCode::SEE_OTHER);
    let account = bob.get("/account").await.text().await.unwrap();
    assert!(account.contains("<strong>Bob</strong> (member)"), "{account}");
    assert!(!account.contains("Invite people"), "a member cannot invite");
    let refused = bob
        .form("/account/invites", &[("role", "admin"), ("uses", "5"), ("hours", "1")])
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);

    // The single-use invite is spent.
    let mut carol = Browser::new(&app.url);
    let spent = carol
        .form("/join", &[("token", &token), ("name", "Carol"), ("password", "carols password")])
        .await;
    assert_eq!(spent.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.state.store.account_count().await.unwrap(), 2);
}
}

crate::both_backends! {
async fn sign_in_attempts_are_limited_per_account_name() {
    let app = accounts_app(|config| {
        config.access.accounts.sign_ins_per_account_per_minute = 3;
    })
    .await;
    let mut setup = Browser::new(&app.url);
    set_up(&app, &mut setup, "Ann").await;
    let mut mallory = Browser::new(&app.url);
    for _ in 0..3 {
        assert_eq!(sign_in(&mut mallory, "ann", "guess one").await.status(), StatusCode::UNAUTHORIZED);
    }
    let limited = sign_in(&mut mallory, "ANN", "correct horse").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u32 = limited.headers()[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert!(limited.text().await.unwrap().contains("Too many sign-in attempts"));
    assert!(mallory.session.is_none(), "even the right password waits");
    // Another account's name is not held back.
    assert_eq!(sign_in(&mut mallory, "Bob", "guess").await.status(), StatusCode::UNAUTHORIZED);
}
}

crate::both_backends! {
async fn expired_sessions_are_refused_and_deleted() {
    let app = accounts_app(|_| {}).await;
    let mut ann = Browser::new(&app.url);
    set_up(&app, &mut ann, "Ann").await;
    let accounts = app.state.accounts.as_ref().unwrap();
    let token = ann.session.clone().unwrap();
    assert!(accounts.session(&token).await.unwrap().is_some());
    // A window that starts after now: every session is past its expiry.
    let future = streamchat::server::now_ms() + 1;
    let window = SessionWindow { idle_before: future, created_before: future };
    assert!(app.state.store.session_account(&streamchat::server::accounts::token_hash(&token), window).await.unwrap().is_none());
    let pruned = app.state.store.prune_accounts(future, window).await.unwrap();
    assert!(pruned >= 2, "the session and the used setup link: {pruned}");
    assert!(accounts.session(&token).await.unwrap().is_none());
    assert_eq!(ann.call("list_threads", &[]).await.status(), StatusCode::UNAUTHORIZED);
}
}

crate::both_backends! {
async fn signing_out_everywhere_closes_the_open_event_streams_within_2_s() {
    let app = accounts_app(|_| {}).await;
    let mut laptop = Browser::new(&app.url);
    set_up(&app, &mut laptop, "Ann").await;
    let mut phone = Browser::new(&app.url);
    assert_eq!(sign_in(&mut phone, "Ann", "correct horse").await.status(), StatusCode::SEE_OTHER);
    let mut thread = phone.subscribe("/api/threads/lobby/events").await;
    let mut list = phone.subscribe("/api/threads/events").await;
    // Still open while the session lives (a keep-alive or event may come;
    // the stream does not end).
    assert!(closed_within(&mut thread, Duration::from_millis(1500)).await.is_none());

    assert_eq!(laptop.form("/signout/everywhere", &[]).await.status(), StatusCode::SEE_OTHER);
    let thread_closed = closed_within(&mut thread, Duration::from_secs(2)).await;
    let list_closed = closed_within(&mut list, Duration::from_secs(2)).await;
    println!("streams closed after sign-out: thread {thread_closed:?}, list {list_closed:?}");
    assert!(thread_closed.is_some(), "the thread's stream closes within 2 s");
    assert!(list_closed.is_some(), "the thread list's stream closes within 2 s");
    // And reconnecting is refused.
    let again = phone.call("list_threads", &[]).await;
    assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_two_instances_a_session_works_on_both_and_ends_on_both() {
    let db = PgDb::create().await;
    let fake = FakeProvider::with(Scripted::words(3, Duration::ZERO)).await;
    let node = |name: &str| {
        let mut config = node_config(&db, &fake, name);
        accounts_mode(&mut config);
        config
    };
    let a = spawn_node(node("a")).await;
    let b = spawn_node(node("b")).await;

    // Made on A, used on B.
    let mut on_a = Browser::new(&a.url);
    set_up_on(&a.state, &mut on_a, "Ann").await;
    let mut on_b = Browser::new(&b.url);
    on_b.session = on_a.session.clone();
    assert!(on_b.call("list_threads", &[]).await.status().is_success());
    let mut stream_on_b = on_b.subscribe("/api/threads/lobby/events").await;

    // Signed out on A: B's open stream closes, and B refuses the session.
    assert_eq!(
        on_a.form("/signout", &[]).await.status(),
        StatusCode::SEE_OTHER
    );
    let closed = closed_within(&mut stream_on_b, Duration::from_secs(2)).await;
    println!("B's stream closed after the sign-out on A: {closed:?}");
    assert!(closed.is_some(), "B's stream closes within 2 s");
    assert_eq!(
        on_b.call("list_threads", &[]).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

crate::both_backends! {
async fn a_disabled_account_is_refused_and_its_streams_close() {
    let app = accounts_app(|_| {}).await;
    let mut ann = Browser::new(&app.url);
    set_up(&app, &mut ann, "Ann").await;
    let bob = invite_member(&app, &mut ann, "Bob").await;
    let mut stream = bob.subscribe("/api/threads/lobby/events").await;
    let bob_id = app.state.store.account_named("bob").await.unwrap().unwrap().id;
    let bob_id = bob_id.to_string();

    // Ann cannot disable herself; she disables Bob.
    let ann_id = app.state.store.account_named("ann").await.unwrap().unwrap().id.to_string();
    let own = ann.form("/account/disabled", &[("id", &ann_id), ("disabled", "true")]).await;
    assert_eq!(own.status(), StatusCode::CONFLICT);
    let page = ann.form("/account/disabled", &[("id", &bob_id), ("disabled", "true")]).await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("Bob (member) (disabled)"));

    let closed = closed_within(&mut stream, Duration::from_secs(2)).await;
    println!("a disabled account's stream closed after {closed:?}");
    assert!(closed.is_some(), "Bob's stream closes within 2 s");
    assert_eq!(bob.call("list_threads", &[]).await.status(), StatusCode::UNAUTHORIZED);
    let mut again = Browser::new(&app.url);
    let refused = sign_in(&mut again, "Bob", "bobs password").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert!(again.session.is_none());
    // Enabled again: Bob signs in; as a member he cannot manage accounts.
    ann.form("/account/disabled", &[("id", &bob_id), ("disabled", "false")]).await;
    assert_eq!(sign_in(&mut again, "Bob", "bobs password").await.status(), StatusCode::SEE_OTHER);
    let by_member = again.form("/account/disabled", &[("id", &ann_id), ("disabled", "true")]).await;
    assert_eq!(by_member.status(), StatusCode::FORBIDDEN);
    assert!(!app.state.store.account_named("Ann").await.unwrap().unwrap().disabled);
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_is_the_default_and_open_mode_says_what_it_is() {
    let config = Config::default();
    assert_eq!(config.access.mode(), AccessMode::Accounts);
    let mut behind_proxy = Config::default();
    behind_proxy.access.identity_header = Some("X-Forwarded-User".into());
    assert_eq!(behind_proxy.access.mode(), AccessMode::Proxy);

    let open =
        crate::support::spawn_app(FakeProvider::with(Scripted::words(3, Duration::ZERO)).await)
            .await;
    let mut visitor = Browser::new(&open.url);
    for path in ["/", "/t/lobby"] {
        let page = visitor.get(path).await.text().await.unwrap();
        assert!(
            page.contains("Open mode: anyone who reaches this app posts under any name they type."),
            "{path}"
        );
        assert!(!page.contains("/account"), "{path}");
    }
    let app = accounts_app(|_| {}).await;
    let mut ann = Browser::new(&app.url);
    set_up(&app, &mut ann, "Ann").await;
    assert!(!ann
        .get("/")
        .await
        .text()
        .await
        .unwrap()
        .contains("Open mode"));
}

/// Posts `@gpt ...` as the browser's account and waits for the reply's end.
async fn ask(app: &TestApp, browser: &Browser, question: &str) {
    let sent = browser
        .call(
            "send_message",
            &[
                ("thread", "lobby"),
                ("author", "x"),
                ("body", &format!("@gpt {question}")),
            ],
        )
        .await;
    assert!(sent.status().is_success(), "{}", sent.status());
    let posted: streamchat::model::Posted = sent.json().await.unwrap();
    app.wait_finished(posted.replies[0].id).await;
}

crate::both_backends! {
async fn each_person_sees_their_usage_and_an_admin_sees_everyones() {
    let app = accounts_app(|_| {}).await;
    let mut ann = Browser::new(&app.url);
    set_up(&app, &mut ann, "Ann").await;
    let mut bob = invite_member(&app, &mut ann, "Bob").await;
    ask(&app, &ann, "one").await;
    ask(&app, &ann, "two").await;
    ask(&app, &bob, "three").await;

    // The fake reports 11 prompt tokens and one completion token per word (3).
    let row = |person: Option<&str>, replies: i64| {
        let person = person.map_or_else(String::new, |p| format!("<td>{p}</td>"));
        format!("{person}<td>@gpt</td><td>{replies}</td><td>{}</td><td>{}</td></tr>", 11 * replies, 3 * replies)
    };
    let anns = ann.get("/account").await.text().await.unwrap();
    let (own, everyone) = anns.split_once("Everyone&#39;s usage").or_else(|| anns.split_once("Everyone's usage")).expect("an admin sees everyone's usage");
    assert!(own.contains(&row(None, 2)), "{own}");
    assert!(everyone.contains(&row(Some("Ann"), 2)), "{everyone}");
    assert!(everyone.contains(&row(Some("Bob"), 1)), "{everyone}");

    let bobs = bob.get("/account").await.text().await.unwrap();
    assert!(bobs.contains(&row(None, 1)), "{bobs}");
    assert!(!bobs.contains("Everyone"), "a member sees only their own");
}
}
