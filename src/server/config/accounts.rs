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
    /// Most sign-ins in progress at once (OpenID Connect redirects and
    /// passkey ceremonies started and not finished, across all clients);
    /// past it, starting one is refused with 429 until some end or expire.
    pub sign_ins_in_progress: u32,
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
            sign_ins_in_progress: 10_000,
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
                && self.sign_ins_in_progress > 0
                && self.sign_ins_per_account_per_minute > 0
                && self.sign_ins_per_client_per_minute > 0,
            "access.accounts: sessions per account and sign-in limits must be at least 1"
        );
        Ok(())
    }
}

/// `[[access.oidc]]`: one OpenID Connect provider people may sign in with
/// ("Sign in with NAME" on the sign-in page).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// Its part of our URLs (`/signin/oidc/ID`, `/signin/oidc/ID/callback`,
    /// the redirect URI to register at the provider): letters, digits, `-`.
    pub id: String,
    /// What the button says after "Sign in with".
    pub name: String,
    /// The issuer URL (discovery reads `ISSUER/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    /// The environment variable holding the client secret (secrets are never
    /// in files). None: a public client, PKCE alone.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// The secret itself, read from `client_secret_env` at start.
    #[serde(skip)]
    pub client_secret: Option<super::Secret>,
    /// Who may make an account by signing in here (someone already linked
    /// always may): a verified e-mail address in one of these domains...
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// ...or this group in the ID token's `groups_claim`. With neither, the
    /// provider signs in only accounts that linked it from their account page.
    #[serde(default)]
    pub allowed_group: Option<String>,
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
}

fn default_groups_claim() -> String {
    "groups".to_owned()
}

impl OidcProviderConfig {
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.id.is_empty()
                && self.id.len() <= 32
                && self
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "access.oidc: id {:?} must be 1 to 32 letters, digits or dashes",
            self.id
        );
        anyhow::ensure!(
            self.issuer.starts_with("https://") || self.issuer.starts_with("http://"),
            "access.oidc {}: issuer must be an http(s) URL",
            self.id
        );
        anyhow::ensure!(
            !self.client_id.is_empty(),
            "access.oidc {}: client_id is empty",
            self.id
        );
        Ok(())
    }
}
