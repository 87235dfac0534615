//! A long reply costs the same per token: streamed in 10,000 deltas it is
//! kept as append-only log rows, the message's body is written once (when
//! it ends) with the exact text and the log rows removed, and a viewer that
//! reconnects in the middle ends with an exact copy.

use std::time::Duration;

use crate::support::{client_list, spawn_app, FakeProvider, Scripted, SseClient};
use streamchat::model::{body_hash, Status};

const DELTAS: usize = 10_000;

/// 10,000 deltas of mixed width: ASCII words, CJK, emoji cut between code
/// points.
fn long_script() -> Scripted {
    let pieces = ["word ", "字", "👩🏽", "\u{200d}💻 ", "é", "\n\n", "`x` "];
    let deltas: Vec<String> = (0..DELTAS)
        .map(|i| {
            format!(
                "{}{}",
                pieces[i % pieces.len()],
                if i % 97 == 0 { "." } else { "" }
            )
        })
        .collect();
    Scripted {
        usage: Some((11, DELTAS as i64)),
        deltas,
        pause: Duration::ZERO,
        ..Scripted::new(&[])
    }
}

async fn raw_body(app: &crate::support::TestApp, id: i64) -> String {
    sqlx::query_scalar("SELECT body FROM messages WHERE id = ?")
        .bind(id)
        .fetch_one(&app.db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_deltas_end_exact_across_a_reconnect() {
    let script = long_script();
    let app = spawn_app(FakeProvider::with(script.clone()).await).await;
    // Every write of a message's body is counted (a trigger on the test's
    // database): a reply's body must be written once, when it ends.
    for ddl in [
        "CREATE TABLE body_writes (id INTEGER, len INTEGER)",
        "CREATE TRIGGER count_body_writes AFTER UPDATE OF body ON messages \
         BEGIN INSERT INTO body_writes VALUES (new.id, length(new.body)); END",
    ] {
        sqlx::query(ddl).execute(&app.db).await.unwrap();
    }
    let (_owner, list) = client_list();
    let (_owner2, steady_list) = client_list();

    let mut steady = SseClient::connect(&app.events_url("lobby"), None).await;
    let mut first = SseClient::connect(&app.events_url("lobby"), None).await;
    let reply = app
        .post("lobby", "Ann", "@gpt a long one")
        .await
        .replies
        .remove(0);

    // Half way through (by bytes), check the storage, then drop the viewer.
    let half = script.text().len() / 2;
    loop {
        let (rev, event) = tokio::time::timeout(Duration::from_secs(20), first.next())
            .await
            .expect("events keep coming")
            .expect("open");
        assert_eq!(list.apply(event, rev), None, "no gap");
        if list.body(reply.id).unwrap_or_default().len() >= half {
            break;
        }
    }
    let last_id = first.last_id.clone().expect("events carry ids");
    drop(first);

    let mut second = SseClient::connect(&app.events_url("lobby"), Some(&last_id)).await;
    second.follow(&list, reply.id).await;
    steady.follow(&steady_list, reply.id).await;

    let stored = app.wait_finished(reply.id).await;
    assert_eq!(stored.status, Status::Done);
    assert_eq!(stored.body, script.text(), "exact text");
    assert_eq!(
        raw_body(&app, reply.id).await,
        script.text(),
        "written into the body"
    );
    let writes: Vec<i64> = sqlx::query_scalar("SELECT len FROM body_writes WHERE id = ?")
        .bind(reply.id)
        .fetch_all(&app.db)
        .await
        .unwrap();
    assert_eq!(
        writes,
        vec![script.text().chars().count() as i64],
        "the body is written once"
    );
    assert_eq!(app.log_rows(reply.id).await, 0, "log rows removed");
    assert_eq!(
        list.body(reply.id).unwrap(),
        stored.body,
        "the reconnected copy"
    );
    assert_eq!(
        steady_list.body(reply.id).unwrap(),
        stored.body,
        "the steady copy"
    );
    assert_eq!(stored.completion_tokens, Some(DELTAS as i64));
    // The end event's length and hash agree with the stored text.
    let page = app.get_message("lobby", reply.id).await;
    assert_eq!(page.body.len(), stored.body.len());
    assert_eq!(body_hash(&page.body), body_hash(&stored.body));
}
