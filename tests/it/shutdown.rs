//! SIGTERM with 20 live replies, the server a real child process: it exits
//! 0 only after every reply's end (or handover) is committed. One instance
//! (SQLite, or PostgreSQL without `cluster.enabled`): each reply
//! `interrupted`, its stored text holding every byte a viewer saw, and the
//! viewer got each end before its subscription closed. Several (PostgreSQL): the other instance continues each one
//! long before the stopped instance's lease would have run out.
//! An instance stopped while it adopts a killed instance's replies hands
//! every one back at once (none ended for want of a slot, no lease kept).

use std::{collections::HashMap, time::Duration};

use sqlx::{sqlite::SqliteConnectOptions, SqlitePool};
use streamchat::model::{ChatEvent, Message, Status};
use tokio::time::Instant;

use crate::support::{
    client_list,
    pg::{NodeProcess, PgDb},
    FakeProvider, Scripted, SseClient,
};

const REPLIES: usize = 20;

/// Posts `@gpt go` `REPLIES` times through `url`; the replies' ids.
async fn ask_many(url: &str) -> Vec<i64> {
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in 0..REPLIES {
        let posted =
            crate::support::post_at(&http, url, "lobby", &format!("user{n}"), "@gpt go").await;
        ids.push(posted.replies[0].id);
    }
    ids
}

/// Applies `client`'s events to its list until every reply in `ids` has at
/// least `bytes` of text there.
async fn watch_until_all_have(
    client: &mut SseClient,
    list: &streamchat::live::MessageList,
    ids: &[i64],
    bytes: usize,
) {
    while !ids
        .iter()
        .all(|id| list.body(*id).is_some_and(|b| b.len() >= bytes))
    {
        let (rev, event) = tokio::time::timeout(Duration::from_secs(20), client.next())
            .await
            .expect("events keep coming")
            .expect("the subscription stays open");
        assert_eq!(list.apply(event, rev), None, "no gap, whole copies");
    }
}

/// Waits for each of `ids` to end, and checks it ended `done` with `text`.
async fn every_reply_done_whole(db: &PgDb, ids: &[i64], text: &str) {
    for id in ids {
        let stored = db.wait_finished(*id, Duration::from_secs(60)).await;
        assert_eq!(
            stored.status,
            Status::Done,
            "reply {id}: {:?}",
            stored.error
        );
        assert_eq!(stored.body, text, "reply {id} whole, no word twice");
    }
}

/// Where a lone instance keeps its data, read back after it exited.
enum LoneDatabase {
    Sqlite(tempfile::TempDir),
    Postgres(PgDb),
}

impl LoneDatabase {
    fn env(&self) -> (&'static str, String) {
        match self {
            LoneDatabase::Sqlite(dir) => (
                "STREAMCHAT_DATABASE",
                dir.path().join("shutdown.db").display().to_string(),
            ),
            LoneDatabase::Postgres(db) => ("DATABASE_URL", db.url.clone()),
        }
    }

    /// Replies still streaming, the stored rows of `ids`, and log rows left.
    async fn read(&self, ids: &[i64]) -> (i64, Vec<Message>, i64) {
        match self {
            LoneDatabase::Sqlite(dir) => {
                let pool = SqlitePool::connect_with(
                    SqliteConnectOptions::new().filename(dir.path().join("shutdown.db")),
                )
                .await
                .unwrap();
                let streaming =
                    sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE status = 'streaming'")
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                let mut rows = Vec::new();
                for id in ids {
                    rows.push(
                        sqlx::query_as("SELECT * FROM messages WHERE id = ?")
                            .bind(id)
                            .fetch_one(&pool)
                            .await
                            .unwrap(),
                    );
                }
                let log = sqlx::query_scalar("SELECT COUNT(*) FROM reply_log")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                (streaming, rows, log)
            }
            LoneDatabase::Postgres(db) => {
                let mut rows = Vec::new();
                for id in ids {
                    rows.push(db.message(*id).await);
                }
                let log = sqlx::query_scalar("SELECT COUNT(*) FROM reply_log")
                    .fetch_one(&db.pool)
                    .await
                    .unwrap();
                (db.streaming().await, rows, log)
            }
        }
    }
}

/// One instance alone on `database`: SIGTERM during `REPLIES` live replies.
async fn sigterm_on_a_lone_instance(database: LoneDatabase, label: &str) {
    let script = Scripted::words(2000, Duration::from_millis(15));
    let fake = FakeProvider::with(script.clone()).await;
    let (key, value) = database.env();
    let mut server = NodeProcess::spawn(&fake, None, &[(key, value.as_str())]).await;
    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&server.events_url("lobby"), None).await;
    let ids = ask_many(&server.url).await;
    watch_until_all_have(&mut viewer, &list, &ids, 40).await;

    let asked = Instant::now();
    server.signal("TERM");
    // What the viewer gets until the server closes the subscription: each
    // reply's end, published after its commit.
    let mut ends = 0;
    while let Ok(Some((rev, event))) =
        tokio::time::timeout(Duration::from_secs(15), viewer.next()).await
    {
        if matches!(event, ChatEvent::Finished { .. }) {
            ends += 1;
        }
        assert_eq!(list.apply(event, rev), None, "no gap, whole copies");
    }
    let status = server.wait_exit(Duration::from_secs(15)).await;
    let took = asked.elapsed();
    assert!(status.success(), "the server exits 0, got {status}");

    let (streaming, stored, log_rows) = database.read(&ids).await;
    assert_eq!(streaming, 0, "nothing left streaming");
    for stored in &stored {
        let id = stored.id;
        assert_eq!(stored.status, Status::Interrupted, "reply {id}");
        let seen = list.body(id).unwrap();
        assert!(
            stored.body.starts_with(&seen) && !seen.is_empty(),
            "reply {id}: the stored text holds every byte the viewer saw ({} stored, {} seen)",
            stored.body.len(),
            seen.len()
        );
        assert!(script.text().starts_with(&stored.body));
    }
    assert_eq!(log_rows, 0, "every log folded into its reply's body");
    // Every reply ended in the viewer's copy before the server closed: by
    // its end event, or by its ended row (a viewer that fell behind while
    // 20 replies ended at once is resynced with the rows).
    let ended = ids
        .iter()
        .filter(|id| list.status(**id) == Some(Status::Interrupted))
        .count();
    assert_eq!(
        ended, REPLIES,
        "the viewer saw every reply end before the server closed ({ends} end events)"
    );
    println!(
        "SIGTERM with {REPLIES} live replies ({label}, one instance): exited 0 after {took:?}, {ends} end events"
    );
}

#[tokio::test]
async fn sigterm_on_a_lone_sqlite_instance_ends_every_reply_interrupted_and_exits_0() {
    sigterm_on_a_lone_instance(LoneDatabase::Sqlite(tempfile::tempdir().unwrap()), "SQLite").await;
}

#[tokio::test]
async fn sigterm_on_a_lone_postgres_instance_ends_every_reply_interrupted_and_exits_0() {
    sigterm_on_a_lone_instance(LoneDatabase::Postgres(PgDb::create().await), "PostgreSQL").await;
}

#[tokio::test]
async fn sigterm_on_one_of_two_instances_hands_every_reply_over_at_once() {
    let db = PgDb::create().await;
    let full = Scripted::words(600, Duration::from_millis(15));
    let fake = FakeProvider::continuing(full.clone()).await;
    // A 30 s lease: only the handover lets B continue within seconds.
    let mut leaving = NodeProcess::start(&db, &fake, "leaving", 30.0, None).await;
    let _staying = NodeProcess::start(&db, &fake, "staying", 30.0, None).await;
    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&leaving.events_url("lobby"), None).await;
    let ids = ask_many(&leaving.url).await;
    watch_until_all_have(&mut viewer, &list, &ids, 40).await;
    drop(viewer);

    let asked = Instant::now();
    leaving.signal("TERM");
    let mut taken: HashMap<i64, Duration> = HashMap::new();
    let mut exited = None;
    while taken.len() < ids.len() || exited.is_none() {
        if asked.elapsed() > Duration::from_secs(25) {
            let left: Vec<(i64, Option<String>, Status, Option<f64>)> = sqlx::query_as(
                "SELECT id, lease_owner, status, \
                 EXTRACT(EPOCH FROM lease_expires_at - clock_timestamp())::float8 \
                 FROM messages WHERE id = ANY($1) AND status = 'streaming' \
                 AND lease_owner IS DISTINCT FROM 'staying'",
            )
            .bind(&ids)
            .fetch_all(&db.pool)
            .await
            .unwrap();
            panic!(
                "{} of {} replies taken over, exited: {exited:?}; not taken (id, owner, \
                 status, lease left in s): {left:?}",
                taken.len(),
                ids.len()
            );
        }
        if exited.is_none() {
            if let Some(status) = leaving.child.try_wait().unwrap() {
                exited = Some((status, asked.elapsed()));
            }
        }
        let owners: Vec<(i64, Option<String>, Status)> =
            sqlx::query_as("SELECT id, lease_owner, status FROM messages WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&db.pool)
                .await
                .unwrap();
        for (id, owner, status) in owners {
            if owner.as_deref() == Some("staying") || status != Status::Streaming {
                taken.entry(id).or_insert_with(|| asked.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, exit_after) = exited.unwrap();
    assert!(
        status.success(),
        "the stopping instance exits 0, got {status}"
    );
    let mut delays: Vec<Duration> = taken.values().copied().collect();
    delays.sort();
    println!(
        "SIGTERM with {REPLIES} live replies (PostgreSQL, 30 s lease): exited 0 after {exit_after:?}; \
         taken over after {:?} (first), {:?} (median), {:?} (last)",
        delays[0],
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
    assert!(
        delays[delays.len() - 1] < Duration::from_secs(10),
        "every reply continued well before the 30 s lease ran out: {delays:?}"
    );
    every_reply_done_whole(&db, &ids, &full.text()).await;
    db.drop_db().await;
}

/// SIGTERM reaching an instance while it takes replies over (their
/// producer was killed): every reply it adopted is handed back at once,
/// none is ended `interrupted` for want of a slot and none keeps its lease;
/// a third instance continues them all to the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_adopting_hands_every_adopted_reply_back() {
    let db = PgDb::create().await;
    let full = Scripted::words(300, Duration::from_millis(15));
    let fake = FakeProvider::continuing(full.clone()).await;
    let mut dying = NodeProcess::start(&db, &fake, "dying", 1.0, None).await;
    // Its leases last 30 s: only a handover lets another go on soon.
    let mut adopting = NodeProcess::start(&db, &fake, "adopting", 30.0, None).await;
    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&dying.events_url("lobby"), None).await;
    let ids = ask_many(&dying.url).await;
    watch_until_all_have(&mut viewer, &list, &ids, 10).await;
    drop(viewer);
    dying.kill9();

    // The first adoption seen: SIGTERM, while the rest are under way.
    let owned_by = |owner: &'static str| {
        let (pool, ids) = (db.pool.clone(), ids.clone());
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(*) FROM messages WHERE id = ANY($1) AND status = 'streaming' \
                 AND lease_owner = $2 AND lease_expires_at > clock_timestamp()",
            )
            .bind(&ids)
            .bind(owner)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    crate::support::poll_until(
        Duration::from_secs(20),
        Duration::from_millis(2),
        "no reply was adopted",
        || owned_by("adopting"),
        |n| *n > 0,
    )
    .await;
    adopting.signal("TERM");
    let status = adopting.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "exits 0, got {status}");
    assert_eq!(
        owned_by("adopting").await,
        0,
        "no lease kept by a stopped instance"
    );
    let interrupted: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM messages WHERE id = ANY($1) AND status = 'interrupted'",
    )
    .bind(&ids)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(interrupted, 0, "handed back, not ended");

    let started = Instant::now();
    let _staying = NodeProcess::start(&db, &fake, "staying", 30.0, None).await;
    every_reply_done_whole(&db, &ids, &full.text()).await;
    println!(
        "SIGTERM while adopting {REPLIES} replies: all continued by a third instance, \
         ended {:?} after it started",
        started.elapsed()
    );
    db.drop_db().await;
}
