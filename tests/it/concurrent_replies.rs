//! 20 replies streaming at once across 3 threads each end with their own
//! text; no text crosses between messages or threads.

use std::{collections::HashMap, time::Duration};

use crate::support::{
    fake_provider::last_user_message, spawn_app, FakeProvider, Scripted, SseClient,
};
use futures::future::join_all;
use streamchat::model::{ChatEvent, Status};

/// The fake's answer to a prompt: words derived from the prompt itself.
fn answer(prompt: &str) -> Scripted {
    let tag = prompt.trim_start_matches("@gpt ").to_owned();
    let deltas: Vec<String> = (0..25).map(|i| format!("{tag}-{i} ")).collect();
    Scripted {
        deltas,
        pause: Duration::from_millis(2),
        ..Scripted::new(&[])
    }
}

crate::both_backends! {
async fn twenty_concurrent_replies_across_three_threads() {
    let fake = FakeProvider::start(|_, request| answer(&last_user_message(request))).await;
    let app = spawn_app(fake).await;
    let threads = ["alpha", "beta", "gamma"];
    for t in threads {
        app.create_thread(t).await;
    }
    // One viewer per thread, subscribed before anything is posted.
    let mut viewers = Vec::new();
    for t in threads {
        viewers.push(SseClient::connect(&app.events_url(t), None).await);
    }

    let posts = (0..20).map(|i| {
        let thread = threads[i % 3];
        let app = &app;
        async move {
            let prompt = format!("@gpt t{thread}q{i}");
            let reply = app
                .post(thread, &format!("user{i}"), &prompt)
                .await
                .replies
                .remove(0);
            (thread, prompt, reply.id)
        }
    });
    let replies = join_all(posts).await;

    for (thread, prompt, id) in &replies {
        let message = app.wait_finished(*id).await;
        assert_eq!(message.status, Status::Done, "{prompt}");
        assert_eq!(&message.thread_id, thread);
        assert_eq!(
            message.body,
            answer(prompt).text(),
            "reply {id} to {prompt:?}"
        );
    }
    assert_eq!(app.fake.requests(), 20);

    // Each viewer saw exactly its thread's messages, and rebuilt each reply whole.
    for (viewer, thread) in viewers.iter_mut().zip(threads) {
        let ours: HashMap<i64, &str> = replies
            .iter()
            .filter(|(t, _, _)| *t == thread)
            .map(|(_, p, id)| (*id, p.as_str()))
            .collect();
        let (_owner, list) = crate::support::client_list();
        let mut finished = 0;
        while finished < ours.len() {
            let (rev, event) = tokio::time::timeout(Duration::from_secs(20), viewer.next())
                .await
                .expect("events keep coming")
                .expect("stream open");
            match &event {
                ChatEvent::Message { message } => assert_eq!(message.thread_id, thread),
                ChatEvent::Delta { id, .. } => {
                    assert!(ours.contains_key(id), "{thread} got delta of {id}")
                }
                ChatEvent::Finished { id, .. } => {
                    assert!(ours.contains_key(id), "{thread} got end of {id}");
                    finished += 1;
                }
                ChatEvent::Notice { id, .. } | ChatEvent::Thought { id, .. } => {
                    assert!(ours.contains_key(id), "{thread} got a notice of {id}")
                }
                ChatEvent::Thread { thread: summary } => assert_eq!(&summary.id, thread),
                ChatEvent::Sync { .. } | ChatEvent::Presence { .. } => {}
            }
            assert_eq!(
                list.apply(event, rev),
                None,
                "the viewer's copy stayed exact"
            );
        }
        for (id, prompt) in ours {
            assert_eq!(list.body(id).unwrap(), answer(prompt).text());
        }
    }
}
}
