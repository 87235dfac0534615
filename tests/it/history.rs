//! Scrolling back: cursor pages over 1,000 messages return each exactly
//! once, in order, even while new messages arrive.

use crate::support::{spawn_app, FakeProvider, Scripted};
use streamchat::model::{HistoryPage, ThreadPage, PAGE_SIZE};

crate::both_backends! {
async fn cursor_pages_return_every_message_once() {
    let app = spawn_app(FakeProvider::with(Scripted::new(&["ok"])).await).await;
    for i in 0..1000 {
        app.post("lobby", "Ann", &format!("message {i}")).await;
    }
    let first: ThreadPage = app
        .call("list_messages", &[("thread", "lobby")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first.messages.len() as i64, PAGE_SIZE);
    assert!(first.more);
    let mut seen: Vec<i64> = first.messages.iter().map(|m| m.id).collect();
    let mut more = first.more;
    let mut pages = 1;
    while more {
        // Messages posted while reading back must not shift the pages.
        app.post("lobby", "Bob", "meanwhile").await;
        let before = seen[0].to_string();
        let page: HistoryPage = app
            .call(
                "older_messages",
                &[("thread", "lobby"), ("before", &before)],
            )
            .await
            .json()
            .await
            .unwrap();
        assert!(!page.messages.is_empty());
        let mut ids: Vec<i64> = page.messages.iter().map(|m| m.id).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "a page is oldest first"
        );
        assert!(ids.last().unwrap() < &seen[0], "older than everything held");
        ids.extend(seen);
        seen = ids;
        more = page.more;
        pages += 1;
    }
    assert_eq!(pages, 10);
    assert_eq!(seen.len(), 1000, "each message exactly once");
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, seen, "in order, no duplicates");
    let bodies: Vec<String> = app
        .state
        .store
        .all_messages("lobby")
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.author == "Ann")
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies[0], "message 0");
    assert_eq!(bodies[999], "message 999");
}
}
