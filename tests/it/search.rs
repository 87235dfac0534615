//! Search: 10,000 messages in 50 threads (5 unlisted). The home page's
//! search finds exactly the matching messages of listed threads, newest
//! first; an unlisted thread is searched from its own page only; the
//! snippet marks the words as text (never markup); the indexes serve the
//! queries (EXPLAIN); a reply enters the index when it ends; and with the
//! setting off there is no box and the endpoint is 404.

use std::{collections::HashSet, time::Duration};

use serde_json::Value;
use streamchat::search::SearchResults;

use crate::support::{spawn_app, spawn_app_with, FakeProvider, Scripted, TestApp};

const THREADS: usize = 50;
const UNLISTED: usize = 5;
const MESSAGES: usize = 10_000;

/// Message `i`'s body: common words, and the searched word in some of them
/// (in several forms: capitalised, inside markup, as part of another word).
fn body(i: usize) -> String {
    let common = ["alpha", "beta", "gamma", "delta", "epsilon"];
    let mut words: Vec<String> = (0..8).map(|k| common[(i * 7 + k) % 5].to_owned()).collect();
    match i % 97 {
        0 => words.insert(3, "zephyr".into()),
        1 => words.push("Zephyr!".into()),
        2 => words.insert(1, "<b>zephyr</b>".into()),
        3 => words.push("zephyrs".into()), // another word: not a match
        _ => {}
    }
    if i.is_multiple_of(13) {
        words.push("orbit".into());
    }
    words.join(" ")
}

fn matches(body: &str, word: &str) -> bool {
    body.split(|c: char| !c.is_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case(word))
}

fn thread_id(t: usize) -> String {
    format!("t{t:02}")
}

fn listed(t: usize) -> bool {
    t >= UNLISTED
}

/// Creates the threads and stores the messages (message `i` in thread
/// `i % THREADS`) straight into the database in one transaction: the
/// indexes are maintained by the database itself. Returns the messages'
/// (id, thread, body).
async fn seed(app: &TestApp) -> Vec<(i64, usize, String)> {
    for t in 0..THREADS {
        app.state
            .store
            .create_thread(&thread_id(t), &format!("Thread {t}"), listed(t))
            .await
            .unwrap();
    }
    let bodies: Vec<(usize, String)> = (0..MESSAGES).map(|i| (i % THREADS, body(i))).collect();
    let ids: Vec<i64> = match &app.pg {
        Some(pg) => {
            let threads: Vec<String> = bodies.iter().map(|(t, _)| thread_id(*t)).collect();
            let texts: Vec<&str> = bodies.iter().map(|(_, b)| b.as_str()).collect();
            let times: Vec<i64> = (0..MESSAGES as i64)
                .map(|i| 1_700_000_000_000 + i)
                .collect();
            sqlx::query_scalar(
                "INSERT INTO messages (thread_id, author, role, body, status, created_at, updated_at) \
                 SELECT t, 'seed', 'user', b, 'done', c, c FROM unnest($1::text[], $2::text[], $3::bigint[]) \
                 WITH ORDINALITY AS s(t, b, c, n) ORDER BY n RETURNING id",
            )
            .bind(&threads)
            .bind(&texts)
            .bind(&times)
            .fetch_all(&pg.pool)
            .await
            .unwrap()
        }
        None => {
            let mut tx = app.db.begin().await.unwrap();
            let mut ids = Vec::with_capacity(MESSAGES);
            for (i, (t, b)) in bodies.iter().enumerate() {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO messages (thread_id, author, role, body, status, created_at, updated_at) \
                     VALUES (?, 'seed', 'user', ?, 'done', ?, ?) RETURNING id",
                )
                .bind(thread_id(*t))
                .bind(b)
                .bind(1_700_000_000_000 + i as i64)
                .bind(1_700_000_000_000 + i as i64)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
                ids.push(id);
            }
            tx.commit().await.unwrap();
            ids
        }
    };
    let mut ids = ids;
    ids.sort_unstable();
    ids.into_iter()
        .zip(bodies)
        .map(|(id, (t, b))| (id, t, b))
        .collect()
}

/// Every page of `/api/search` for `q` (within `thread`).
async fn search_all(
    app: &TestApp,
    q: &str,
    thread: Option<&str>,
) -> Vec<streamchat::search::SearchHit> {
    let mut hits = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let mut query = vec![("q", q.to_owned())];
        if let Some(thread) = thread {
            query.push(("thread", thread.to_owned()));
        }
        if let Some(before) = before {
            query.push(("before", before.to_string()));
        }
        let response = app
            .http
            .get(format!("{}/api/search", app.url))
            .query(&query)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let page: SearchResults = response.json().await.unwrap();
        hits.extend(page.hits);
        match page.next_before {
            Some(next) => before = Some(next),
            None => return hits,
        }
    }
}

crate::both_backends! {
async fn finds_exactly_the_matching_messages_newest_first() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["ok"])).await).await;
    let messages = seed(&app).await;

    let hits = search_all(&app, "ZEPHYR", None).await;
    let expected: Vec<i64> = messages
        .iter()
        .rev()
        .filter(|(_, t, b)| listed(*t) && matches(b, "zephyr"))
        .map(|(id, _, _)| *id)
        .collect();
    assert!(expected.len() > 60, "{} expected", expected.len());
    let found: Vec<i64> = hits.iter().map(|h| h.id).collect();
    assert_eq!(found, expected, "exactly the matches, newest first");
    let unlisted: HashSet<String> = (0..UNLISTED).map(thread_id).collect();
    assert!(hits.iter().all(|h| !unlisted.contains(&h.thread_id)));
    for hit in &hits {
        let marked: Vec<&str> = hit.snippet.iter().filter(|f| f.hit).map(|f| f.text.as_str()).collect();
        assert!(!marked.is_empty(), "hit {} marks its match", hit.id);
        assert!(marked.iter().all(|m| m.eq_ignore_ascii_case("zephyr")), "{marked:?}");
        assert_eq!(hit.thread_title, format!("Thread {}", &hit.thread_id[1..].parse::<usize>().unwrap()));
        assert_eq!(hit.author, "seed");
    }
    // Markup in a body stays text: the fragments carry `<b>` as characters.
    let with_markup = hits
        .iter()
        .find(|h| h.snippet.iter().any(|f| f.text.contains("<b>")))
        .expect("a hit whose body has markup");
    let text: String = with_markup.snippet.iter().map(|f| f.text.as_str()).collect();
    assert!(text.contains("<b>zephyr</b>"), "{text}");

    // Two words: both required.
    let both = search_all(&app, "zephyr orbit", None).await;
    let expected_both: Vec<i64> = messages
        .iter()
        .rev()
        .filter(|(_, t, b)| listed(*t) && matches(b, "zephyr") && matches(b, "orbit"))
        .map(|(id, _, _)| *id)
        .collect();
    assert_eq!(both.iter().map(|h| h.id).collect::<Vec<_>>(), expected_both);

    // An unlisted thread is searched from its own page.
    let own = search_all(&app, "zephyr", Some(&thread_id(2))).await;
    let expected_own: Vec<i64> = messages
        .iter()
        .rev()
        .filter(|(_, t, b)| *t == 2 && matches(b, "zephyr"))
        .map(|(id, _, _)| *id)
        .collect();
    assert!(!expected_own.is_empty());
    assert_eq!(own.iter().map(|h| h.id).collect::<Vec<_>>(), expected_own);

    // Query syntax of either index is just separators.
    for hostile in ["\"", "zephyr\" OR \"alpha", "NEAR(zephyr", "zephyr:*", "*", "'); DROP TABLE messages; --"] {
        let response = app.http.get(format!("{}/api/search", app.url)).query(&[("q", hostile)]).send().await.unwrap();
        assert_eq!(response.status(), 200, "{hostile}");
    }
    assert_eq!(app.message_count().await, MESSAGES as i64);

    // The rendered results page: the word in <mark>, the body's markup escaped.
    let page = app.page("/search?q=zephyr").await;
    assert!(page.contains("<mark>zephyr</mark>"));
    assert!(page.contains("&lt;b&gt;"), "markup from a body is escaped");
    assert!(!page.contains("<b>zephyr"), "no markup from a body");

    // The indexes serve the queries.
    let plan = explain(&app).await;
    println!("search plan:\n{plan}");
    if app.pg.is_some() {
        assert!(plan.contains("idx_messages_search"), "{plan}");
    } else {
        assert!(plan.contains("VIRTUAL TABLE INDEX"), "{plan}");
        assert!(plan.contains("USING INTEGER PRIMARY KEY"), "{plan}");
        assert!(!plan.contains("SCAN m"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "newest first straight from the index: {plan}");
    }
}
}

/// The plan of the home page's search for a rare word.
async fn explain(app: &TestApp) -> String {
    match &app.pg {
        Some(pg) => {
            sqlx::query("ANALYZE messages")
                .execute(&pg.pool)
                .await
                .unwrap();
            let sql = format!(
                "EXPLAIN {}",
                streamchat::server::store::search_sql::POSTGRES_LISTED
            );
            let rows: Vec<String> = sqlx::query_scalar(&sql)
                .bind("zephyr")
                .bind(i64::MAX)
                .bind(21i64)
                .fetch_all(&pg.pool)
                .await
                .unwrap();
            rows.join("\n")
        }
        None => {
            let sql = format!(
                "EXPLAIN QUERY PLAN {}",
                streamchat::server::store::search_sql::SQLITE_LISTED
            );
            let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(&sql)
                .bind("\"zephyr\"")
                .bind(i64::MAX)
                .bind(21i64)
                .fetch_all(&app.db)
                .await
                .unwrap();
            rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
        }
    }
}

crate::both_backends! {
/// A user's message is found once posted; a reply only once it has ended.
async fn messages_enter_the_index_when_final() {
    let script = Scripted::new(&["quasar ", "lights "]).ending(crate::support::fake_provider::Ending::Stall);
    let app = spawn_app(FakeProvider::with(script).await).await;
    let posted = app.post("lobby", "Ann", "@gpt what is a nebula").await;
    let found = search_all(&app, "nebula", None).await;
    assert_eq!(found.iter().map(|h| h.id).collect::<Vec<_>>(), vec![posted.message.id]);

    let reply = posted.replies[0].id;
    crate::support::poll_until(
        Duration::from_secs(20),
        Duration::from_millis(10),
        "the reply's text is stored",
        || app.message(reply),
        |m| m.body.contains("lights"),
    )
    .await;
    assert!(search_all(&app, "quasar", None).await.is_empty(), "not while it streams");
    let id = reply.to_string();
    let stop = app.call("stop_reply", &[("thread", "lobby"), ("id", &id), ("by", "Ann")]).await;
    assert!(stop.status().is_success());
    app.wait_finished(reply).await;
    let found = search_all(&app, "QUASAR", None).await;
    assert_eq!(found.iter().map(|h| h.id).collect::<Vec<_>>(), vec![reply]);
    assert_eq!(found[0].author, "gpt");
}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turned_off_there_is_no_box_and_no_endpoint() {
    let fake = FakeProvider::with(Scripted::new(&["ok"])).await;
    let off = spawn_app_with(fake.clone(), |c| c.search.enabled = false).await;
    let response = off
        .http
        .get(format!("{}/api/search?q=hello", off.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(
        crate::support::error_text(&body).contains("turned off"),
        "{body}"
    );
    assert!(!off.page("/").await.contains("role=\"search\""));
    assert!(!off.page("/t/lobby").await.contains("role=\"search\""));

    let on = spawn_app(fake).await;
    assert!(on.page("/").await.contains("role=\"search\""));
    assert!(on.page("/t/lobby").await.contains("role=\"search\""));
}

/// Result pages rendered concurrently all complete (a render that read the
/// router's state after its request ended used to panic now and then).
/// 16 at a time: each request waits for at most 16 renders, however
/// loaded the machine is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_result_pages_all_render() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["ok"])).await).await;
    app.post("lobby", "Ann", "the comet returns").await;
    let paths = (0..160).map(|i| {
        if i % 2 == 0 {
            "/search?q=comet"
        } else {
            "/search?q=comet&thread=lobby"
        }
    });
    let pages = get_all(&app, paths, 16, Duration::from_secs(60)).await;
    assert_eq!(pages.len(), 160);
    for (status, body) in pages {
        assert_eq!(status, 200);
        assert!(body.contains("<mark>comet</mark>"));
    }
}

/// Pages render while other routers are built in the same process (the
/// tests do that all the time; leptos holds every resource's first load
/// back while it lists routes, and a render caught by that hung forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_while_another_router_is_built() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["ok"])).await).await;
    app.post("lobby", "Ann", "the comet returns").await;
    let state = app.state.clone();
    let building = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let builder = std::thread::spawn({
        let building = building.clone();
        move || {
            let mut built = 0;
            while building.load(std::sync::atomic::Ordering::Relaxed) {
                drop(streamchat::server::app_server::router(state.clone()));
                built += 1;
            }
            built
        }
    });
    let paths = std::iter::repeat_n("/search?q=comet", 200);
    let pages = get_all(&app, paths, 8, Duration::from_secs(30)).await;
    building.store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(builder.join().unwrap() > 0, "routers were built meanwhile");
    for (status, body) in pages {
        assert_eq!(status, 200);
        assert!(body.contains("<mark>comet</mark>"));
    }
}

/// GETs every path, `at_once` at a time, each within `timeout`; the
/// answers' statuses and bodies (in no particular order).
async fn get_all(
    app: &TestApp,
    paths: impl Iterator<Item = &'static str>,
    at_once: usize,
    timeout: Duration,
) -> Vec<(reqwest::StatusCode, String)> {
    use futures::StreamExt;
    futures::stream::iter(paths)
        .map(|path| async move {
            let response = app
                .http
                .get(format!("{}{path}", app.url))
                .timeout(timeout)
                .send()
                .await
                .expect("the page is answered");
            (
                response.status(),
                response.text().await.expect("the page ends"),
            )
        })
        .buffer_unordered(at_once)
        .collect()
        .await
}
