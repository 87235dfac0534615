//! The settings: the shipped file parses, the environment overrides it.

use super::*;

#[test]
fn repo_settings_parse_and_env_overrides() {
    let mut config: Config = toml::from_str(include_str!("../../../Leptos.toml")).unwrap();
    assert_eq!(config.bots[0].handle, "gpt");
    assert_eq!(config.bots[0].context_messages, 20);
    assert!(config.uses_demo());
    config
        .apply_env(|name| match name {
            "OPENAI_API_KEY" => Some("sk-test".into()),
            "STREAMCHAT_CONTEXT_MESSAGES" => Some("5".into()),
            _ => None,
        })
        .unwrap();
    assert_eq!(config.bots[0].context_messages, 5);
    assert!(config.bots[0].api_key.is_none());
    assert!(!config.uses_demo());
    assert!(!format!("{config:?}").contains("sk-test"));
}

#[test]
fn a_bot_reads_its_own_key_from_the_variable_it_names() {
    let mut config: Config = toml::from_str(
        "[[bots]]\nhandle = \"@Local\"\nbase_url = \"http://localhost:11434/v1\"\napi_key_env = \"LOCAL_KEY\"",
    )
    .unwrap();
    config
        .apply_env(|name| (name == "LOCAL_KEY").then(|| "sk-local".to_owned()))
        .unwrap();
    let bot = &config.bots[0];
    assert_eq!(bot.handle, "local", "handle normalised");
    assert_eq!(bot.api_key.as_ref().map(|k| k.0.as_str()), Some("sk-local"));
    assert!(!format!("{config:?}").contains("sk-local"));
    assert!(
        Config::default()
            .apply_env(|_| None)
            .and_then(|()| {
                let mut twice: Config =
                    toml::from_str("[[bots]]\nhandle = \"a\"\n[[bots]]\nhandle = \"A\"").unwrap();
                twice.apply_env(|_| None)
            })
            .is_err(),
        "a handle used twice is refused"
    );
}

#[test]
fn lanes_are_on_unless_turned_off_by_name() {
    let mut config = Config::default();
    config.apply_env(|_| None).unwrap();
    assert!(config.lanes.append && config.lanes.http1 && config.lanes.lean_sse);
    let off = |v: &str| {
        let v = v.to_owned();
        move |name: &str| (name == "STREAMCHAT_LANES_OFF").then(|| v.clone())
    };
    let mut config = Config::default();
    config.apply_env(off("append, lean_sse")).unwrap();
    assert!(!config.lanes.append && config.lanes.http1 && !config.lanes.lean_sse);
    let mut config = Config::default();
    assert!(config.apply_env(off("warp")).is_err());
}
