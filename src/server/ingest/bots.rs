//! The bots the app answers as, from `Leptos.toml`: each a handle, a
//! prompt and a provider client. Immutable after start-up.

use std::sync::Arc;

use super::{provider::Provider, tools::Toolbox};
use crate::model::mentions;
use crate::server::config::{BotConfig, Config};

pub struct Bot {
    pub config: BotConfig,
    pub provider: Provider,
    /// The tools it may call.
    pub tools: Toolbox,
}

#[derive(Clone)]
pub struct Bots(Arc<Vec<Bot>>);

impl Bots {
    pub fn from_config(config: &Config, self_base_url: &str) -> Self {
        Self(Arc::new(
            config
                .bots
                .iter()
                .map(|bot| Bot {
                    config: bot.clone(),
                    provider: Provider::for_bot(config, bot, self_base_url),
                    tools: Toolbox::new(bot, &config.tools),
                })
                .collect(),
        ))
    }

    /// The bot answering as `handle` (a reply's author); replies written
    /// by a bot since removed from the config go to the default bot.
    pub fn get(&self, handle: &str) -> &Bot {
        self.0
            .iter()
            .find(|b| b.config.handle.eq_ignore_ascii_case(handle))
            .unwrap_or(&self.0[0])
    }

    /// The bots a message mentions, in configuration order.
    pub fn mentioned(&self, body: &str) -> Vec<&Bot> {
        self.0
            .iter()
            .filter(|b| mentions(body, &b.config.handle))
            .collect()
    }

    pub fn handles(&self) -> Vec<String> {
        self.0.iter().map(|b| b.config.handle.clone()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Bot> {
        self.0.iter()
    }
}
