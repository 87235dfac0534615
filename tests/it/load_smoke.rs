//! Small versions of benchmark scenarios S1 and S2, to keep the load
//! generator working: the server runs as a child process, every viewer must
//! receive every reply whole (the scenario checks each copy against the
//! stored reply). Correctness only; speed is the benchmark's business.

use std::path::Path;

use crate::support::load::{run_fresh, scenario};

fn server_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_streamchat"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_smoke_one_reply_one_viewer() {
    let (_dir, fake, server) = run_fresh(server_binary(), 200.0, 20).await;
    let outcome = scenario(&server, &fake, "s1", 1, 1, 1, 20).await;
    assert_eq!(outcome.delivered, 20);
    assert!(outcome.bytes_per_token > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_smoke_replies_times_viewers() {
    let (_dir, fake, server) = run_fresh(server_binary(), 200.0, 20).await;
    let outcome = scenario(&server, &fake, "s2", 4, 1, 3, 20).await;
    assert_eq!(
        outcome.delivered,
        4 * 3 * 20,
        "every viewer got every token"
    );
}
