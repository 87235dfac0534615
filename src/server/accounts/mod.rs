//! Built-in accounts (`access.mode = "accounts"`): the first admin through
//! a single-use setup link, invites, password sign-in, and sessions kept in
//! the database (so every instance on PostgreSQL knows them).
//!
//! [`Accounts`] is the one place that decides who someone is: the pages
//! (`edge/account_pages.rs`) call it, and the door (`edge/access.rs`) asks
//! it which account a request's session cookie belongs to. Sign-in attempts are
//! limited per account name and per client through the same budgets as
//! other limits (shared by instances on PostgreSQL).

mod challenges;
pub mod cookie;
mod members;
pub mod oidc;
pub mod passkeys;
mod password;
mod token;
mod watch;

use std::{sync::Arc, time::Duration};

use crate::error::AppError;
use crate::server::{
    config::{AccountsConfig, OidcProviderConfig},
    ingest::budget::{Budget, Spend},
    now_ms,
    store::{
        AccountRow, Coordination, Credential, JoinRefusal, NewJoinLink, NewMember, SessionWindow,
        Store, UsageRow,
    },
};

pub use members::Members;
pub use password::{MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS};
pub use token::token_hash;
pub use watch::Watching;

/// Sessions checked per statement when revalidating.
const REVALIDATE_CHUNK: usize = 500;

/// The session a request came with (its token's hash), in the request's
/// extensions beside its `AccountRow`.
#[derive(Clone, Debug)]
pub struct SessionRef {
    pub hash: String,
}

/// A session's last use is written at most this often (a request within it
/// reads only).
const TOUCH_EVERY_MS: i64 = 60_000;

/// Longest account name, as a typed author name.
pub const MAX_NAME_CHARS: usize = crate::model::MAX_AUTHOR_CHARS;

/// Someone signed in: their account and the session token for the cookie.
#[derive(Debug)]
pub struct SignedIn {
    pub account: AccountRow,
    pub token: String,
}

#[derive(Clone)]
pub struct Accounts {
    store: Store,
    coordination: Coordination,
    config: Arc<AccountsConfig>,
    per_account: Budget,
    per_client: Budget,
    hasher: password::Hasher,
    watch: watch::Watch,
    /// OpenID Connect providers (`[[access.oidc]]`).
    oidc: Arc<oidc::Oidc>,
}

impl Accounts {
    pub fn new(
        store: Store,
        coordination: Coordination,
        config: &AccountsConfig,
        providers: &[OidcProviderConfig],
    ) -> Self {
        Self {
            oidc: Arc::new(oidc::Oidc::new(providers)),
            store,
            coordination,
            per_account: Budget::new(Spend::SignIns, config.sign_ins_per_account_per_minute),
            per_client: Budget::new(Spend::SignIns, config.sign_ins_per_client_per_minute),
            config: Arc::new(config.clone()),
            hasher: password::Hasher::default(),
            watch: watch::Watch::default(),
        }
    }

    pub fn config(&self) -> &AccountsConfig {
        &self.config
    }

    fn window(&self, now: i64) -> SessionWindow {
        SessionWindow {
            idle_before: now - (self.config.session_idle_hours * 3_600_000.0) as i64,
            created_before: now - (self.config.session_max_days * 86_400_000.0) as i64,
        }
    }

    /// How long the session cookie lives (the absolute expiry).
    pub fn session_max_age(&self) -> Duration {
        Duration::from_secs_f64(self.config.session_max_days * 86_400.0)
    }

    /// With no account yet, a new single-use link that makes the first
    /// admin (its token; valid `setup_link_minutes`). `None` once any
    /// account exists: nothing else makes the first account.
    pub async fn setup_link(&self) -> Result<Option<String>, AppError> {
        if self.store.account_count().await? > 0 {
            return Ok(None);
        }
        let token = token::new_token();
        let minutes = self.config.setup_link_minutes;
        self.store
            .insert_join_link(&NewJoinLink {
                token_hash: &token_hash(&token),
                kind: "setup",
                role: "admin",
                uses: 1,
                expires_at: now_ms() + (minutes * 60_000.0) as i64,
                created_by: None,
            })
            .await?;
        Ok(Some(token))
    }

    /// An admin's invite: a link that makes `uses` accounts with `role`
    /// within `hours`.
    pub async fn invite(
        &self,
        by: &AccountRow,
        role: &str,
        uses: u32,
        hours: f64,
    ) -> Result<String, AppError> {
        if by.role != "admin" {
            return Err(AppError::Forbidden(
                "Only an admin can invite people.".into(),
            ));
        }
        if !matches!(role, "admin" | "member") {
            return Err(AppError::Invalid("The role is admin or member.".into()));
        }
        let fits = (1..=1000).contains(&uses) && hours > 0.0 && hours <= 24.0 * 30.0;
        if !fits {
            return Err(AppError::Invalid(
                "An invite makes 1 to 1000 accounts and lasts up to 30 days.".into(),
            ));
        }
        let token = token::new_token();
        self.store
            .insert_join_link(&NewJoinLink {
                token_hash: &token_hash(&token),
                kind: "invite",
                role,
                uses: i64::from(uses),
                expires_at: now_ms() + (hours * 3_600_000.0) as i64,
                created_by: Some(by.id),
            })
            .await?;
        Ok(token)
    }

    /// Makes an account through a setup or invite link, signed in.
    pub async fn join(&self, link: &str, name: &str, password: &str) -> Result<SignedIn, AppError> {
        let name = checked_name(name)?;
        if let Some(refusal) = password::refusal(password) {
            return Err(AppError::Invalid(refusal));
        }
        if !token::plausible(link) {
            return Err(expired_link());
        }
        let password_hash = self.hasher.hash(password).await?;
        self.make_account(
            Some(link),
            "member",
            name,
            Credential::Password(&password_hash),
        )
        .await
    }

    /// Makes an account with its credential and first session, in one
    /// transaction: through a link (`link`, which carries the role), or
    /// with `role` (OpenID Connect's join rule).
    pub(crate) async fn make_account(
        &self,
        link: Option<&str>,
        role: &str,
        name: &str,
        credential: Credential<'_>,
    ) -> Result<SignedIn, AppError> {
        let session = token::new_token();
        let link_hash = link.map(token_hash);
        let joined = self
            .store
            .join_with(&NewMember {
                link_hash: link_hash.as_deref(),
                role,
                name,
                credential,
                session_hash: &token_hash(&session),
                now: now_ms(),
            })
            .await?;
        match joined {
            Ok(account) => {
                tracing::info!(account = account.id, role = %account.role, "account made");
                Ok(SignedIn {
                    account,
                    token: session,
                })
            }
            Err(JoinRefusal::Link) => Err(expired_link()),
            Err(JoinRefusal::NameTaken) => Err(name_taken(name)),
        }
    }

    /// Signs in with a password. Every attempt, right or wrong, spends one
    /// from the account name's and the client's sign-in budgets.
    pub async fn sign_in(
        &self,
        name: &str,
        password: &str,
        client: &str,
    ) -> Result<SignedIn, AppError> {
        let name = name.trim();
        let wrong = || AppError::Unauthorized("That name and password do not match.".into());
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            return Err(wrong());
        }
        self.per_client.take(&self.coordination, client, 1).await?;
        let key = format!("name:{}", name.to_lowercase());
        self.per_account.take(&self.coordination, &key, 1).await?;
        let account = self.store.account_named(name).await?;
        let hash = account.as_ref().and_then(|a| a.password_hash.as_deref());
        let matches = self.hasher.verify(password, hash).await?;
        let account = account.filter(|_| matches).ok_or_else(wrong)?;
        self.open_session(account).await
    }

    /// A new session for an account that proved who it is (refused while
    /// the account is disabled).
    pub(crate) async fn open_session(&self, account: AccountRow) -> Result<SignedIn, AppError> {
        if account.disabled {
            return Err(AppError::Forbidden(
                "This account is disabled; ask an admin.".into(),
            ));
        }
        let token = token::new_token();
        self.store
            .insert_session(
                &token_hash(&token),
                account.id,
                now_ms(),
                self.config.sessions_per_account,
            )
            .await?;
        Ok(SignedIn { account, token })
    }

    /// The account a session token belongs to, if the session is live and
    /// the account not disabled, with the session's reference. Marks the
    /// session used (at most once a minute).
    pub async fn session(&self, token: &str) -> Result<Option<(AccountRow, SessionRef)>, AppError> {
        if !token::plausible(token) {
            return Ok(None);
        }
        let hash = token_hash(token);
        let now = now_ms();
        let Some((account, last_seen)) =
            self.store.session_account(&hash, self.window(now)).await?
        else {
            return Ok(None);
        };
        if account.disabled {
            return Ok(None);
        }
        if now - last_seen >= TOUCH_EVERY_MS {
            self.store.touch_session(&hash, now).await?;
        }
        Ok(Some((account, SessionRef { hash })))
    }

    /// Held by an event stream: resolves its `ended()` once the session
    /// is signed out, expired or its account disabled.
    pub fn watch_session(&self, session: &SessionRef) -> Watching {
        self.watch.watch(&session.hash)
    }

    /// Checks the sessions open streams hold every `revalidate_secs`,
    /// until shutdown, and ends the streams of those no longer live.
    pub fn spawn_revalidation(&self, background: &crate::server::Background) {
        let accounts = self.clone();
        let period = Duration::from_secs_f64(self.config.revalidate_secs);
        background.every(period, move || {
            let accounts = accounts.clone();
            async move {
                if let Err(e) = accounts.revalidate().await {
                    tracing::warn!(error = %e, "checking the sessions of open streams failed");
                }
            }
        });
    }

    async fn revalidate(&self) -> Result<usize, AppError> {
        let watched = self.watch.watched();
        let window = self.window(now_ms());
        let mut ended = 0;
        for chunk in watched.chunks(REVALIDATE_CHUNK) {
            let live = self.store.live_sessions(chunk, window).await?;
            ended += self.watch.end_all_but(chunk, &live.into_iter().collect());
        }
        if ended > 0 {
            tracing::info!(sessions = ended, "event streams of ended sessions closed");
        }
        Ok(ended)
    }

    /// Ends one session (signing out in this browser).
    pub async fn sign_out(&self, token: &str) -> Result<(), AppError> {
        if token::plausible(token) {
            self.store.delete_session(&token_hash(token)).await?;
        }
        Ok(())
    }

    /// Ends every session of the account, this one included.
    pub async fn sign_out_everywhere(&self, account: &AccountRow) -> Result<u64, AppError> {
        let ended = self.store.delete_sessions_of(account.id).await?;
        tracing::info!(
            account = account.id,
            sessions = ended,
            "signed out everywhere"
        );
        Ok(ended)
    }

    /// Prunes now and every ten minutes, until shutdown.
    pub fn spawn_pruning(&self, background: &crate::server::Background) {
        let accounts = self.clone();
        background.every(Duration::from_secs(600), move || {
            let accounts = accounts.clone();
            async move {
                match accounts.prune().await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(rows = n, "expired sessions and links deleted"),
                    Err(e) => tracing::warn!(error = %e, "pruning sessions and links failed"),
                }
            }
        });
    }

    /// Usage by bot and day: the account's own, or for an admin with
    /// `everyone`, every account's (newest first, [`MAX_USAGE_ROWS`] rows).
    pub async fn usage(&self, by: &AccountRow, everyone: bool) -> Result<Vec<UsageRow>, AppError> {
        let account = if everyone {
            admin(by)?;
            None
        } else {
            Some(by.id)
        };
        Ok(self.store.usage(account, MAX_USAGE_ROWS).await?)
    }

    /// The accounts an admin manages (at most [`MAX_LISTED`], by name).
    pub async fn list(&self, by: &AccountRow) -> Result<Vec<AccountRow>, AppError> {
        admin(by)?;
        Ok(self.store.list_accounts(MAX_LISTED).await?)
    }

    /// An admin disables (or enables again) another account. A disabled
    /// account cannot sign in, its sessions are refused, and its open
    /// event streams close within `revalidate_secs`.
    pub async fn set_disabled(
        &self,
        by: &AccountRow,
        id: i64,
        disabled: bool,
    ) -> Result<(), AppError> {
        admin(by)?;
        if id == by.id {
            return Err(AppError::Conflict(
                "You cannot disable your own account.".into(),
            ));
        }
        if !self.store.set_disabled(id, disabled).await? {
            return Err(AppError::NotFound(format!("There is no account {id}.")));
        }
        tracing::info!(
            account = id,
            disabled,
            by = by.id,
            "account disabled or enabled"
        );
        Ok(())
    }

    /// Deletes expired sessions and used-up or expired links.
    pub async fn prune(&self) -> Result<u64, AppError> {
        let now = now_ms();
        Ok(self.store.prune_accounts(now, self.window(now)).await?)
    }
}

/// Usage rows an account page shows.
pub const MAX_USAGE_ROWS: i64 = 200;

/// Accounts an admin's page lists.
pub const MAX_LISTED: i64 = 500;

fn admin(account: &AccountRow) -> Result<(), AppError> {
    if account.role == "admin" {
        Ok(())
    } else {
        Err(AppError::Forbidden(
            "Only an admin can invite people or manage accounts.".into(),
        ))
    }
}

/// A new account's name, trimmed; refused when empty, too long, or with
/// control characters.
fn checked_name(name: &str) -> Result<&str, AppError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(AppError::Invalid(format!(
            "Choose a name of 1 to {MAX_NAME_CHARS} characters."
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(AppError::Invalid(
            "A name cannot hold control characters.".into(),
        ));
    }
    Ok(name)
}

/// A setup or invite link that makes nothing.
fn expired_link() -> AppError {
    AppError::NotFound(
        "This link does not work: it was used already, it expired, or it is not a link of this \
         app. Ask for a new one."
            .into(),
    )
}

fn name_taken(name: &str) -> AppError {
    AppError::Conflict(format!("The name \"{name}\" is taken; choose another."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(checked_name("  Ann ").unwrap(), "Ann");
        assert!(checked_name("   ").is_err());
        assert!(checked_name(&"n".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(checked_name("An\u{7}n").is_err());
        assert!(checked_name(&"ü".repeat(MAX_NAME_CHARS)).is_ok());
    }
}
