//! Each hand-written fast path produces what the library path produces:
//! a reply streamed with the append lane (one lone `INSERT` on the
//! writer's own connection) and the provider lane (`http1.rs`) off gives a
//! viewer and the database the same text, offsets and end as with them on.
//! (The lean subscription path against hyper's: `sse_paths.rs`.)

use std::time::Duration;

use streamchat::model::Status;

use crate::support::{client_list, spawn_app_with, FakeProvider, Scripted, SseClient};

/// The viewer's deltas (offset and text, merged as they came), the stored
/// body and status, with the append and provider lanes on or off.
async fn reply_with(
    script: &Scripted,
    lanes: (bool, bool),
) -> (String, Vec<String>, String, Status) {
    let app = spawn_app_with(FakeProvider::with(script.clone()).await, |c| {
        c.lanes.append = lanes.0;
        c.lanes.http1 = lanes.1;
    })
    .await;
    let (_owner, list) = client_list();
    let mut viewer = SseClient::connect(&app.events_url("lobby"), None).await;
    let reply = app
        .post("lobby", "Ann", "@gpt lanes")
        .await
        .replies
        .remove(0);
    let deltas = viewer.follow(&list, reply.id).await;
    let stored = app.wait_finished(reply.id).await;
    (
        list.body(reply.id).unwrap(),
        deltas,
        stored.body,
        stored.status,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_paths_give_the_same_reply_as_the_fast_paths() {
    let script = Scripted::words(60, Duration::from_millis(1));
    let fast = reply_with(&script, (true, true)).await;
    let plain = reply_with(&script, (false, false)).await;
    for (lanes, (seen, deltas, stored, status)) in [("fast", fast), ("plain", plain)] {
        assert_eq!(status, Status::Done, "{lanes}");
        assert_eq!(stored, script.text(), "{lanes}: the stored reply");
        assert_eq!(seen, stored, "{lanes}: the viewer's copy");
        assert_eq!(deltas.concat(), stored, "{lanes}: the deltas, in order");
    }
}
