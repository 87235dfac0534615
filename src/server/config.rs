//! The app's settings: `Leptos.toml`, then environment variables over it.
//! Secrets come from the environment only and never appear in `Debug` output.

use std::{fmt, path::Path, path::PathBuf};

use anyhow::Context;
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// SQLite file; created with its directory when missing.
    pub database: PathBuf,
    pub bot: BotConfig,
    pub demo: DemoConfig,
    /// Provider endpoint; `None` with no API key means the embedded demo.
    #[serde(skip)]
    pub openai_base_url: Option<String>,
    #[serde(skip)]
    pub openai_api_key: Option<Secret>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BotConfig {
    pub model: String,
    pub context_messages: u32,
    pub system_prompt: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    pub tokens_per_second: f64,
}

/// A value that must not be logged or sent anywhere but the provider.
#[derive(Clone)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database: PathBuf::from("data/streamchat.db"),
            bot: BotConfig::default(),
            demo: DemoConfig::default(),
            openai_base_url: None,
            openai_api_key: None,
        }
    }
}

impl Default for BotConfig {
    fn default() -> Self {
        Self {
            model: "gpt-4o-mini".into(),
            context_messages: 20,
            system_prompt: "You are @gpt, a terse assistant in a group chat. Answer the question \
                            you were mentioned in, briefly and plainly."
                .into(),
        }
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            tokens_per_second: 30.0,
        }
    }
}

impl Config {
    /// Reads `path` (missing file: defaults) and applies the environment.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let mut config: Config = match std::fs::read_to_string(path) {
            Ok(text) => {
                toml::from_str(&text).with_context(|| format!("reading {}", path.display()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    /// Overrides settings from environment variables (see README.md).
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> anyhow::Result<()> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = set("STREAMCHAT_DATABASE") {
            self.database = v.into();
        }
        if let Some(v) = set("OPENAI_MODEL") {
            self.bot.model = v;
        }
        if let Some(v) = set("STREAMCHAT_SYSTEM_PROMPT") {
            self.bot.system_prompt = v;
        }
        if let Some(v) = set("STREAMCHAT_CONTEXT_MESSAGES") {
            self.bot.context_messages = v.parse().context("STREAMCHAT_CONTEXT_MESSAGES")?;
        }
        if let Some(v) = set("STREAMCHAT_DEMO_TOKENS_PER_SECOND") {
            self.demo.tokens_per_second = v.parse().context("STREAMCHAT_DEMO_TOKENS_PER_SECOND")?;
        }
        self.openai_base_url = set("OPENAI_BASE_URL");
        self.openai_api_key = set("OPENAI_API_KEY").map(Secret);
        anyhow::ensure!(
            self.demo.tokens_per_second > 0.0,
            "demo.tokens_per_second must be positive"
        );
        Ok(())
    }

    /// Whether replies come from the embedded demo model.
    pub fn uses_demo(&self) -> bool {
        self.openai_base_url.is_none() && self.openai_api_key.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_settings_parse_and_env_overrides() {
        let mut config: Config = toml::from_str(include_str!("../../Leptos.toml")).unwrap();
        assert_eq!(config.bot.context_messages, 20);
        assert!(config.uses_demo());
        config
            .apply_env(|name| match name {
                "OPENAI_API_KEY" => Some("sk-test".into()),
                "STREAMCHAT_CONTEXT_MESSAGES" => Some("5".into()),
                _ => None,
            })
            .unwrap();
        assert_eq!(config.bot.context_messages, 5);
        assert!(!config.uses_demo());
        assert!(!format!("{config:?}").contains("sk-test"));
    }
}
