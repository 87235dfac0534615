//! Who people are (`access.mode`), and the built-in accounts' settings.

use serde::Deserialize;

pub use crate::model::AccessMode;

/// `[access.accounts]`: sessions, setup and invite links, sign-in limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsConfig {
    /// A session not used for this long is refused (hours).
    pub session_idle_hours: f64,
    /// A session is refused this long after sign-in, however much it is used (days).
    pub session_max_days: f64,
    /// Most sessions one account keeps; signing in once more ends its
    /// least recently used one.
    pub sessions_per_account: u32,
    /// How long the first admin's setup link works (minutes).
    pub setup_link_minutes: f64,
    /// Failed and successful sign-in attempts per minute for one account
    /// name, and for one client (address, or /64).
    pub sign_ins_per_account_per_minute: u32,
    pub sign_ins_per_client_per_minute: u32,
    /// How often the sessions of open event streams are checked: a stream
    /// of a session signed out (on any instance), expired or of a disabled
    /// account closes within this (seconds).
    pub revalidate_secs: f64,
    /// The session cookie's `Secure` flag: `None` sets it when the request
    /// came over HTTPS (a trusted proxy's `X-Forwarded-Proto: https`).
    pub secure_cookie: Option<bool>,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        Self {
            session_idle_hours: 14.0 * 24.0,
            session_max_days: 30.0,
            sessions_per_account: 20,
            setup_link_minutes: 60.0,
            sign_ins_per_account_per_minute: 5,
            sign_ins_per_client_per_minute: 20,
            revalidate_secs: 0.5,
            secure_cookie: None,
        }
    }
}

impl AccountsConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.session_idle_hours > 0.0
                && self.session_max_days > 0.0
                && self.setup_link_minutes > 0.0
                && self.revalidate_secs > 0.0,
            "access.accounts: session and setup link lifetimes and revalidate_secs must be positive"
        );
        anyhow::ensure!(
            self.sessions_per_account > 0
                && self.sign_ins_per_account_per_minute > 0
                && self.sign_ins_per_client_per_minute > 0,
            "access.accounts: sessions per account and sign-in limits must be at least 1"
        );
        Ok(())
    }
}
