//! Bots come from the config: two mentioned in one message answer as two
//! replies streaming at the same time, each with its own prompt.

use std::time::Duration;

use crate::support::{
    fake_provider::last_user_message, spawn_app_with, FakeProvider, Scripted, SseClient,
};
use streamchat::{
    model::{ChatEvent, Status},
    server::config::{BotConfig, Secret},
};

crate::both_backends! {
async fn two_bots_answer_one_message_concurrently() {
    let fake = FakeProvider::start(|_, request| {
        let system = request["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let who = if system.contains("critic") {
            "critic"
        } else {
            "gpt"
        };
        let _ = last_user_message(request);
        Scripted {
            deltas: (0..20).map(|i| format!("{who}{i} ")).collect(),
            pause: Duration::from_millis(15),
            ..Scripted::new(&[])
        }
    })
    .await;
    let critic_url = fake.base_url.clone();
    let app = spawn_app_with(fake, move |c| {
        c.bots.push(BotConfig {
            handle: "critic".into(),
            model: "critic-model".into(),
            system_prompt: "You are the critic.".into(),
            base_url: Some(critic_url),
            api_key: Some(Secret("sk-critic-own".into())),
            ..BotConfig::default()
        });
    })
    .await;
    let mut viewer = SseClient::connect(&app.events_url("lobby"), None).await;
    let posted = app
        .post("lobby", "Ann", "@gpt and @critic: is this plan sound?")
        .await;
    assert_eq!(posted.replies.len(), 2);
    let gpt = &posted.replies[0];
    let critic = &posted.replies[1];
    assert_eq!(
        (gpt.author.as_str(), critic.author.as_str()),
        ("gpt", "critic")
    );
    assert_eq!(critic.model.as_deref(), Some("critic-model"));

    // Concurrent: deltas of both arrive before either finishes.
    let mut started = (false, false);
    let mut finished = 0;
    let mut interleaved = false;
    while finished < 2 {
        let (_, event) = tokio::time::timeout(Duration::from_secs(20), viewer.next())
            .await
            .expect("events")
            .expect("open");
        match event {
            ChatEvent::Delta { id, .. } => {
                if id == gpt.id {
                    started.0 = true;
                } else if id == critic.id {
                    started.1 = true;
                }
                if finished == 0 && started.0 && started.1 {
                    interleaved = true;
                }
            }
            ChatEvent::Finished { .. } => finished += 1,
            _ => {}
        }
    }
    assert!(interleaved, "both replies were streaming at once");
    let gpt = app.wait_finished(gpt.id).await;
    let critic = app.wait_finished(critic.id).await;
    assert_eq!(gpt.status, Status::Done);
    assert_eq!(critic.status, Status::Done);
    assert!(
        gpt.body.starts_with("gpt0 ") && !gpt.body.contains("critic"),
        "{}",
        gpt.body
    );
    assert!(critic.body.starts_with("critic0 "), "{}", critic.body);
    let models: Vec<String> = app
        .fake
        .request_bodies()
        .iter()
        .map(|b| b["model"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        models.contains(&"fake-model".to_owned()) && models.contains(&"critic-model".to_owned()),
        "{models:?}"
    );
}
}
