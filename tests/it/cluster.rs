//! Several instances on one PostgreSQL: viewers of any instance see every
//! reply exact, a dead instance's replies are taken over, a paused one is
//! fenced, a lost listening connection loses nothing, and Stop, presence
//! and the `@gpt` limit hold across instances.

use std::{collections::HashSet, time::Duration};

use crate::support::{
    client_list,
    pg::{node_config, spawn_node, NodeProcess, PgDb},
    poll_until,
    sse::ended_reply,
    FakeProvider, Scripted, SseClient,
};
use streamchat::{
    live::MessageList,
    model::{body_hash, ChatEvent, Status},
};

/// Applies events to `list` until every reply in `ids` has ended; every
/// event must apply cleanly (no gap, whole copies).
async fn follow_all(client: &mut SseClient, list: &MessageList, ids: &[i64]) {
    let mut open: HashSet<i64> = ids.iter().copied().collect();
    while !open.is_empty() {
        let (rev, event) = tokio::time::timeout(Duration::from_secs(30), client.next())
            .await
            .expect("events keep coming")
            .expect("the subscription stays open");
        if let Some(id) = ended_reply(&event) {
            open.remove(&id);
        }
        assert_eq!(list.apply(event, rev), None, "no gap, whole copies");
    }
}

#[tokio::test]
async fn a_viewer_on_another_instance_sees_the_reply_grow_and_end_exact() {
    let db = PgDb::create().await;
    let script = Scripted::words(150, Duration::from_millis(3));
    let fake = FakeProvider::with(script.clone()).await;
    let a = spawn_node(node_config(&db, &fake, "a")).await;
    let b = spawn_node(node_config(&db, &fake, "b")).await;

    let (_owner, on_b) = client_list();
    let mut viewer_b = SseClient::connect(&b.events_url("lobby"), None).await;
    let (_owner2, moving) = client_list();
    let mut viewer_a = SseClient::connect(&a.events_url("lobby"), None).await;

    let reply = a.post("lobby", "Ann", "@gpt count for us").await.replies[0].clone();

    // The moving viewer reads some of the reply on A, drops, and resumes on B.
    let mut deltas = 0;
    while deltas < 10 {
        let (rev, event) = viewer_a.next().await.expect("A's stream open");
        if matches!(event, ChatEvent::Delta { .. }) {
            deltas += 1;
        }
        assert_eq!(moving.apply(event, rev), None);
    }
    let last_id = viewer_a.last_id.clone().expect("events carry ids");
    drop(viewer_a);
    let mut resumed = SseClient::connect(&b.events_url("lobby"), Some(&last_id)).await;

    let grew = viewer_b.follow(&on_b, reply.id).await;
    resumed.follow(&moving, reply.id).await;

    let stored = db.wait_finished(reply.id, Duration::from_secs(20)).await;
    assert_eq!(stored.status, Status::Done);
    assert_eq!(stored.body, script.text());
    assert!(
        grew.len() > 1,
        "B's viewer saw the reply grow delta by delta"
    );
    for list in [&on_b, &moving] {
        let body = list.body(reply.id).unwrap();
        assert_eq!(body.len(), stored.body.len());
        assert_eq!(body_hash(&body), body_hash(&stored.body));
    }
    db.drop_db().await;
}

#[tokio::test]
async fn a_lost_listening_connection_loses_nothing_for_any_viewer() {
    let db = PgDb::create().await;
    let script = Scripted::words(120, Duration::from_millis(10));
    let fake = FakeProvider::with(script.clone()).await;
    let a = spawn_node(node_config(&db, &fake, "a")).await;
    let b = spawn_node(node_config(&db, &fake, "listener-victim")).await;

    let mut viewers = Vec::new();
    for _ in 0..3 {
        let (owner, list) = client_list();
        let client = SseClient::connect(&b.events_url("lobby"), None).await;
        viewers.push((owner, list, client));
    }
    let mut ids = Vec::new();
    for n in 0..10 {
        let posted = a.post("lobby", &format!("user{n}"), "@gpt go").await;
        ids.push(posted.replies[0].id);
    }
    db.wait_for_text(ids[9], 20).await;
    let killed = db.terminate_listener("listener-victim").await;
    assert_eq!(
        killed,
        vec![true],
        "B's listening connection was terminated"
    );

    for (_owner, list, client) in &mut viewers {
        follow_all(client, list, &ids).await;
    }
    for id in &ids {
        let stored = db.wait_finished(*id, Duration::from_secs(20)).await;
        assert_eq!(stored.status, Status::Done);
        assert_eq!(stored.body, script.text());
        for (_owner, list, _) in &viewers {
            assert_eq!(list.body(*id).unwrap(), stored.body, "reply {id} exact");
        }
    }
    // B listens again.
    let listening: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'streamchat-listen:listener-victim'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(listening, 1);
    db.drop_db().await;
}

#[tokio::test]
async fn stop_on_one_instance_stops_a_reply_generating_on_another() {
    let db = PgDb::create().await;
    let fake = FakeProvider::with(Scripted::words(400, Duration::from_millis(20))).await;
    let a = spawn_node(node_config(&db, &fake, "a")).await;
    let b = spawn_node(node_config(&db, &fake, "b")).await;

    let reply = a.post("lobby", "Ann", "@gpt talk").await.replies[0].clone();
    db.wait_for_text(reply.id, 10).await;
    let id = reply.id.to_string();
    let pressed = tokio::time::Instant::now();
    let response = b
        .call(
            "stop_reply",
            &[("thread", "lobby"), ("id", &id), ("by", "Bob")],
        )
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    let stopped = db.wait_finished(reply.id, Duration::from_secs(5)).await;
    let took = pressed.elapsed();
    assert_eq!(stopped.status, Status::Cancelled);
    assert_eq!(stopped.stopped_by.as_deref(), Some("Bob"));
    assert!(took < Duration::from_secs(1), "stopped in {took:?}");
    db.drop_db().await;
}

#[tokio::test]
async fn presence_counts_the_viewers_of_every_instance() {
    let db = PgDb::create().await;
    let fake = FakeProvider::with(Scripted::new(&["hi"])).await;
    let a = spawn_node(node_config(&db, &fake, "a")).await;
    let b = spawn_node(node_config(&db, &fake, "b")).await;

    let mut on_a = SseClient::connect(&a.events_url("lobby"), None).await;
    let _on_b1 = SseClient::connect(&b.events_url("lobby"), None).await;
    let _on_b2 = SseClient::connect(&b.events_url("lobby"), None).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (_, event) = tokio::time::timeout(left, on_a.next())
            .await
            .expect("A's viewer hears 3 watchers")
            .expect("open");
        if let ChatEvent::Presence { watchers: 3 } = event {
            break;
        }
    }
    db.drop_db().await;
}

#[tokio::test]
async fn the_mention_limit_holds_when_posts_alternate_between_instances() {
    let db = PgDb::create().await;
    let fake = FakeProvider::with(Scripted::new(&["ok"])).await;
    let mut config_a = node_config(&db, &fake, "a");
    config_a.limits.mentions_per_minute = 3;
    let mut config_b = node_config(&db, &fake, "b");
    config_b.limits.mentions_per_minute = 3;
    let a = spawn_node(config_a).await;
    let b = spawn_node(config_b).await;

    let mut statuses = Vec::new();
    for n in 0..4 {
        let node = if n % 2 == 0 { &a } else { &b };
        let response = node
            .call(
                "send_message",
                &[("thread", "lobby"), ("author", "Ann"), ("body", "@gpt hi")],
            )
            .await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, vec![200, 200, 200, 429]);
    db.drop_db().await;
}

/// The text a viewer holds of reply `id`, reading events for `for_at_least`.
async fn watch_for(client: &mut SseClient, list: &MessageList, id: i64, bytes: usize) -> String {
    loop {
        let (rev, event) = tokio::time::timeout(Duration::from_secs(20), client.next())
            .await
            .expect("events keep coming")
            .expect("open");
        assert_eq!(list.apply(event, rev), None);
        if let Some(body) = list.body(id) {
            if body.len() >= bytes {
                return body;
            }
        }
    }
}

/// Waits until `owner` holds reply `id`'s lease, at most `within`.
async fn wait_owner(db: &PgDb, id: i64, owner: &str, within: Duration) {
    poll_until(
        within,
        Duration::from_millis(20),
        &format!("{owner} did not take reply {id} over"),
        || lease_owner(db, id),
        |held: &Option<String>| held.as_deref() == Some(owner),
    )
    .await;
}

/// Posts `@gpt go` to the lobby through the instance at `url`; its reply.
async fn ask_on(url: &str) -> streamchat::model::Message {
    crate::support::post_at(&reqwest::Client::new(), url, "lobby", "Ann", "@gpt go")
        .await
        .replies
        .remove(0)
}

/// The instance holding reply `id`'s lease.
async fn lease_owner(db: &PgDb, id: i64) -> Option<String> {
    sqlx::query_scalar("SELECT lease_owner FROM messages WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_killed_instance_s_reply_is_taken_over_and_ends_done() {
    let db = PgDb::create().await;
    let full = Scripted::words(300, Duration::from_millis(15));
    let fake = FakeProvider::continuing(full.clone()).await;
    let lease = 1.0;
    let mut a = NodeProcess::start(&db, &fake, "proc-a", lease, None).await;
    let b = NodeProcess::start(&db, &fake, "proc-b", lease, None).await;

    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&b.events_url("lobby"), None).await;
    let reply = ask_on(&a.url).await;
    let seen = watch_for(&mut viewer, &list, reply.id, 200).await;
    a.kill9();
    // Adopted within the lease and a second.
    wait_owner(
        &db,
        reply.id,
        "proc-b",
        Duration::from_secs_f64(lease + 1.0),
    )
    .await;
    viewer.follow(&list, reply.id).await;
    let stored = db.wait_finished(reply.id, Duration::from_secs(30)).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    assert!(
        stored.body.starts_with(&seen),
        "everything seen before the kill is kept"
    );
    assert_eq!(
        stored.body,
        full.text(),
        "the stored prefix plus the continuation"
    );
    assert!(stored.notice.is_some_and(|n| n.contains("Resumed")));
    assert_eq!(list.body(reply.id).unwrap(), stored.body);
    drop(b);
    db.drop_db().await;
}

#[tokio::test]
async fn a_paused_producer_whose_lease_was_taken_over_writes_nothing_more() {
    let db = PgDb::create().await;
    let full = Scripted::words(300, Duration::from_millis(10));
    let fake = FakeProvider::continuing(full.clone()).await;
    let lease = 1.0;
    let a = NodeProcess::start(&db, &fake, "paused-a", lease, None).await;
    let b = NodeProcess::start(&db, &fake, "proc-b", lease, None).await;

    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&b.events_url("lobby"), None).await;
    let reply = ask_on(&a.url).await;
    watch_for(&mut viewer, &list, reply.id, 100).await;
    a.signal("STOP");
    wait_owner(&db, reply.id, "proc-b", Duration::from_secs(10)).await;
    a.signal("CONT");
    viewer.follow(&list, reply.id).await;
    let stored = db.wait_finished(reply.id, Duration::from_secs(30)).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    // With any of A's later text, the words would repeat.
    assert_eq!(stored.body, full.text());
    assert_eq!(list.body(reply.id).unwrap(), stored.body);
    drop((a, b));
    db.drop_db().await;
}

#[tokio::test]
async fn a_stopping_instance_hands_its_replies_over() {
    let db = PgDb::create().await;
    let full = Scripted::words(200, Duration::from_millis(10));
    let fake = FakeProvider::continuing(full.clone()).await;
    let mut config_a = node_config(&db, &fake, "leaving");
    // Long leases: only the handover makes B take the reply at once.
    config_a.cluster.lease_secs = 30.0;
    let a = spawn_node(config_a).await;
    let mut config_b = node_config(&db, &fake, "staying");
    config_b.cluster.lease_secs = 30.0;
    let _b = spawn_node(config_b).await;

    let reply = a.post("lobby", "Ann", "@gpt go").await.replies[0].clone();
    db.wait_for_text(reply.id, 50).await;
    a.shutdown();
    // Well before A's lease would have run out.
    wait_owner(&db, reply.id, "staying", Duration::from_secs(5)).await;
    let stored = db.wait_finished(reply.id, Duration::from_secs(20)).await;
    assert_eq!(stored.status, Status::Done, "{:?}", stored.error);
    assert_eq!(stored.body, full.text());
}

#[tokio::test]
async fn set_to_interrupt_a_dead_instance_s_reply_ends_interrupted_with_its_text() {
    let db = PgDb::create().await;
    let fake = FakeProvider::with(Scripted::words(300, Duration::from_millis(15))).await;
    let interrupt = [("STREAMCHAT_ORPHANED_REPLIES", "interrupt")];
    let mut a = NodeProcess::start_with(&db, &fake, "dies", 1.0, None, &interrupt).await;
    let b = NodeProcess::start_with(&db, &fake, "stays", 1.0, None, &interrupt).await;
    let reply = ask_on(&a.url).await;
    let before = db.wait_for_text(reply.id, 60).await;
    a.kill9();
    let stored = db.wait_finished(reply.id, Duration::from_secs(10)).await;
    assert_eq!(stored.status, Status::Interrupted);
    assert!(
        stored.body.starts_with(&before.body),
        "the text so far is kept"
    );
    assert!(stored.body.len() < Scripted::words(300, Duration::ZERO).text().len());
    assert_eq!(
        fake.requests(),
        1,
        "nothing was asked of the provider again"
    );
    drop(b);
}

/// `kill -9` of the instance producing a reply while the model is still
/// thinking: the instance that ends it keeps every bit of thinking a
/// viewer (on that other instance) saw, as thinking, not answer.
#[tokio::test]
async fn kill_9_while_thinking_keeps_the_thinking_seen() {
    let db = PgDb::create().await;
    let fake = FakeProvider::with(Scripted::reasoning(3000, 20, Duration::from_millis(4))).await;
    let interrupt = [("STREAMCHAT_ORPHANED_REPLIES", "interrupt")];
    let mut a = NodeProcess::start_with(&db, &fake, "thinks", 1.0, None, &interrupt).await;
    let b = NodeProcess::start_with(&db, &fake, "watches", 1.0, None, &interrupt).await;
    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&b.events_url("lobby"), None).await;
    let reply = ask_on(&a.url).await;
    loop {
        let (rev, event) = tokio::time::timeout(Duration::from_secs(20), viewer.next())
            .await
            .expect("events keep coming")
            .expect("open");
        assert_eq!(list.apply(event, rev), None);
        if list.thinking(reply.id).is_some_and(|t| t.len() >= 200) {
            break;
        }
    }
    let seen = list.thinking(reply.id).unwrap();
    a.kill9();
    viewer.follow(&list, reply.id).await;
    let stored = db.wait_finished(reply.id, Duration::from_secs(15)).await;
    assert_eq!(stored.status, Status::Interrupted);
    assert!(
        stored.thinking.starts_with(&seen),
        "all thinking seen is kept"
    );
    assert_eq!(stored.body, "", "it had not started answering");
    assert_eq!(list.thinking(reply.id).unwrap(), stored.thinking);
    drop(b);
    db.drop_db().await;
}

#[tokio::test]
async fn the_home_page_of_one_instance_marks_a_reply_live_on_another() {
    let db = PgDb::create().await;
    // The reply stays live until stopped: no race with its end, however
    // slow the machine.
    let script = Scripted::words(5, Duration::from_millis(10))
        .ending(crate::support::fake_provider::Ending::Stall);
    let fake = FakeProvider::with(script).await;
    let a = spawn_node(node_config(&db, &fake, "a")).await;
    let b = spawn_node(node_config(&db, &fake, "b")).await;
    let mut list = SseClient::connect(&format!("{}/api/threads/events", b.url), None).await;
    let reply = a.post("lobby", "Ann", "@gpt go").await.replies[0].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (_, event) = tokio::time::timeout(left, list.next())
            .await
            .expect("B's home page hears the reply is live")
            .expect("open");
        if let ChatEvent::Thread { thread } = event {
            if thread.id == "lobby" && thread.live > 0 {
                break;
            }
        }
    }
    let id = reply.id.to_string();
    let stop = a
        .call(
            "stop_reply",
            &[("thread", "lobby"), ("id", &id), ("by", "Ann")],
        )
        .await;
    assert!(stop.status().is_success());
    db.wait_finished(reply.id, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn a_rename_on_one_instance_reaches_the_viewers_of_another() {
    let db = PgDb::create().await;
    let fake = FakeProvider::with(Scripted::new(&["hi"])).await;
    let a = spawn_node(node_config(&db, &fake, "a")).await;
    let b = spawn_node(node_config(&db, &fake, "b")).await;
    let mut viewer = SseClient::connect(&b.events_url("lobby"), None).await;
    let response = a
        .call(
            "rename_thread",
            &[("thread", "lobby"), ("title", "Town square")],
        )
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let (_, event) = tokio::time::timeout(left, viewer.next())
            .await
            .expect("B's viewer hears the new title")
            .expect("open");
        if let ChatEvent::Thread { thread } = event {
            assert_eq!(thread.title, "Town square");
            break;
        }
    }
}
