//! The chaos check: three instances on one PostgreSQL, replies streaming,
//! instances killed with SIGKILL at random and restarted, viewers
//! reconnecting to whichever instance answers. Nothing any viewer saw is
//! lost, every viewer ends with the stored text, nothing stays `streaming`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use crate::support::{
    client_list,
    pg::{NodeProcess, PgDb},
    post_at, FakeProvider, Scripted, SseClient,
};
use streamchat::{live::MessageList, model::Status};

/// A small deterministic generator (the run is reproducible from its seed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n
    }
}

/// Connects to the first of `ports` (from `start`) that answers.
async fn connect_any(ports: &[u16], start: usize, last_id: Option<&str>) -> Option<SseClient> {
    for k in 0..ports.len() {
        let port = ports[(start + k) % ports.len()];
        let mut request = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/api/threads/lobby/events"))
            .header("accept", "text/event-stream");
        if let Some(id) = last_id {
            request = request.header("last-event-id", id);
        }
        if let Ok(response) = request.send().await {
            if response.status().is_success() {
                let mut client = SseClient::from_response(response);
                client.last_id = last_id.map(str::to_owned);
                return Some(client);
            }
        }
    }
    None
}

struct Viewer {
    _owner: leptos::prelude::Owner,
    list: MessageList,
    client: Option<SseClient>,
    last_id: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_kills_lose_nothing_any_viewer_saw() {
    let db = PgDb::create().await;
    let full = Scripted::words(250, Duration::from_millis(12));
    let fake = FakeProvider::continuing(full.clone()).await;
    let lease = 1.0;
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(Some(
            NodeProcess::start(&db, &fake, &format!("chaos{i}"), lease, None).await,
        ));
    }
    let ports: Vec<u16> = nodes.iter().flatten().map(|n| n.port).collect();
    let mut rng = Lcg(0x5eed);

    let mut viewers = Vec::new();
    for v in 0..3 {
        let (owner, list) = client_list();
        viewers.push(Viewer {
            _owner: owner,
            list,
            client: connect_any(&ports, v, None).await,
            last_id: None,
        });
    }
    let http = reqwest::Client::new();
    let mut replies = Vec::new();
    for i in 0..6 {
        let port = ports[i % ports.len()];
        let posted = post_at(
            &http,
            &format!("http://127.0.0.1:{port}"),
            "lobby",
            &format!("u{i}"),
            "@gpt go",
        )
        .await;
        replies.push(posted.replies[0].id);
    }

    // What each viewer held of each reply at each kill.
    let seen: Arc<Mutex<Vec<HashMap<i64, String>>>> = Arc::default();
    let mut kills = 0;
    let mut reconnects = 0;
    let mut next_kill = tokio::time::Instant::now() + Duration::from_millis(800);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "the chaos run ends");
        // Viewers read what is there.
        for (v, viewer) in viewers.iter_mut().enumerate() {
            if viewer.client.is_none() {
                viewer.client = connect_any(
                    &ports,
                    rng.below(ports.len()) + v,
                    viewer.last_id.as_deref(),
                )
                .await;
            }
            let Some(client) = viewer.client.as_mut() else {
                continue;
            };
            match tokio::time::timeout(Duration::from_millis(30), client.next()).await {
                Ok(Some((rev, event))) => {
                    viewer.last_id = client.last_id.clone();
                    assert_eq!(viewer.list.apply(event, rev), None, "no gap, whole copies");
                }
                Ok(None) => {
                    viewer.client = None; // its instance died
                    reconnects += 1;
                }
                Err(_) => {}
            }
        }
        if kills < 6 && tokio::time::Instant::now() >= next_kill {
            let mut snapshot = HashMap::new();
            for viewer in &viewers {
                for id in &replies {
                    if let Some(body) = viewer.list.body(*id) {
                        let kept: &mut String = snapshot.entry(*id).or_default();
                        if body.len() > kept.len() {
                            *kept = body;
                        }
                    }
                }
            }
            seen.lock().unwrap().push(snapshot);
            let victim = rng.below(nodes.len());
            if let Some(mut node) = nodes[victim].take() {
                node.kill9();
                let port = node.port;
                drop(node);
                kills += 1;
                // Down for a while, as a crashed instance is (not a wait for
                // anything: the others must cope meanwhile).
                tokio::time::sleep(Duration::from_millis(300)).await;
                nodes[victim] = Some(
                    NodeProcess::start(
                        &db,
                        &fake,
                        &format!("chaos{victim}-{kills}"),
                        lease,
                        Some(port),
                    )
                    .await,
                );
            }
            next_kill =
                tokio::time::Instant::now() + Duration::from_millis(700 + rng.below(800) as u64);
        }
        if kills >= 6 && db.streaming().await == 0 {
            break;
        }
    }

    // Every viewer catches up to the end (reconnecting where it must).
    for viewer in &mut viewers {
        loop {
            let done = replies.iter().all(|id| {
                viewer
                    .list
                    .status(*id)
                    .is_some_and(|s| s != Status::Streaming)
            });
            if done {
                break;
            }
            if viewer.client.is_none() {
                viewer.client = connect_any(&ports, 0, viewer.last_id.as_deref()).await;
            }
            let client = viewer.client.as_mut().expect("an instance answers");
            match tokio::time::timeout(Duration::from_secs(20), client.next()).await {
                Ok(Some((rev, event))) => {
                    viewer.last_id = client.last_id.clone();
                    assert_eq!(viewer.list.apply(event, rev), None);
                }
                Ok(None) => viewer.client = None,
                Err(_) => panic!("a viewer stopped hearing"),
            }
        }
    }
    assert_eq!(db.streaming().await, 0, "nothing stays streaming");
    for id in &replies {
        let stored = db.message(*id).await;
        assert_eq!(
            stored.status,
            Status::Done,
            "reply {id}: {:?}",
            stored.error
        );
        assert_eq!(stored.body, full.text(), "reply {id}");
        for snapshot in seen.lock().unwrap().iter() {
            if let Some(held) = snapshot.get(id) {
                assert!(
                    stored.body.starts_with(held.as_str()),
                    "reply {id} lost what a viewer saw"
                );
            }
        }
        for viewer in &viewers {
            assert_eq!(viewer.list.body(*id).unwrap(), stored.body, "reply {id}");
        }
    }
    assert_eq!(kills, 6);
    // The run did what it is for: replies were taken over from killed
    // instances, and viewers had to reconnect.
    let resumed: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE resumed > 0")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(resumed > 0, "no reply was taken over");
    assert!(reconnects > 0, "no viewer had to reconnect");
}
