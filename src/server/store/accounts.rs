//! The built-in accounts' tables (`accounts`, `sessions`, `join_links`):
//! their statements, once for both backends, and the [`Store`] methods
//! that run them. The statements use `$n` parameters, which sqlx binds by
//! number on SQLite as on PostgreSQL, and only types both spell alike
//! (integers, text), so one text serves both.
//!
//! Invariants:
//! - A token is never stored, only its SHA-256 (the caller hashes).
//! - Joining is one transaction (`sign_ins.rs`: `join_with`): the link's use
//!   is taken, the account, its credential and its first session made, or
//!   nothing changes (a taken name, a used-up or expired link, a setup link
//!   once any account exists).
//! - An account keeps at most `keep` sessions; the least recently used go.
//! - Expired sessions and used-up or expired links are deleted by
//!   [`Store::prune_accounts`], so the tables stay bounded.

use super::{Backend, Store, StoreError};

/// An account as sign-in and the session check read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountRow {
    pub id: i64,
    pub name: String,
    /// `admin` or `member`.
    pub role: String,
    /// argon2id PHC string; `None`: no password set.
    pub password_hash: Option<String>,
    pub disabled: bool,
}

/// Replies asked for by one account, for one bot on one day (UTC).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct UsageRow {
    /// The account's name.
    pub person: String,
    /// The bot's handle (the reply's author).
    pub bot: String,
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    pub replies: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

/// The usage statement: replies joined to the account that asked (by its
/// name, from when the account was made: older typed-name messages with
/// the same name are not its), summed per person, bot and day.
pub(super) const USAGE_SELECT: &str =
    "SELECT a.name AS person, m.author AS bot, m.created_at / 86400000 AS day, \
     COUNT(*) AS replies, CAST(COALESCE(SUM(m.prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
     CAST(COALESCE(SUM(m.completion_tokens), 0) AS BIGINT) AS completion_tokens \
     FROM messages m JOIN accounts a ON a.name = m.requested_by AND m.created_at >= a.created_at \
     WHERE m.role = 'assistant'";

/// A link to be stored (its token already hashed).
#[derive(Clone, Debug)]
pub struct NewJoinLink<'a> {
    pub token_hash: &'a str,
    /// `setup` or `invite`.
    pub kind: &'a str,
    pub role: &'a str,
    pub uses: i64,
    pub expires_at: i64,
    pub created_by: Option<i64>,
}

/// Why a join changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinRefusal {
    /// Unknown, expired, used up, or a setup link after the first account.
    Link,
    /// Another account has this name (in any letter case).
    NameTaken,
}

/// When sessions end: those last used before `idle_before` or made before
/// `created_before` are refused, and deleted when pruned.
#[derive(Clone, Copy, Debug)]
pub struct SessionWindow {
    pub idle_before: i64,
    pub created_before: i64,
}

/// A new session: token hash, account, now (made and last used).
pub(super) const INSERT_SESSION: &str =
    "INSERT INTO sessions (token_hash, account_id, created_at, last_seen_at) VALUES ($1, $2, $3, $3)";

pub(super) const ACCOUNT_COLUMNS: &str = "a.id, a.name, a.role, a.password_hash, a.disabled";

pub(super) type AccountTuple = (i64, String, String, Option<String>, i64);

pub(super) fn account(row: AccountTuple) -> AccountRow {
    let (id, name, role, password_hash, disabled) = row;
    AccountRow {
        id,
        name,
        role,
        password_hash,
        disabled: disabled != 0,
    }
}

/// The statements, as methods of a backend's store (`$store`, whose
/// `pool` takes writes; `$db` its sqlx database).
macro_rules! account_statements {
    ($store:ty, $db:ty) => {
        impl $store {
            pub(in crate::server::store) async fn account_count(&self) -> Result<i64, sqlx::Error> {
                sqlx::query_scalar::<$db, i64>("SELECT COUNT(*) FROM accounts")
                    .fetch_one(&self.pool)
                    .await
            }

            pub(in crate::server::store) async fn account_named(
                &self,
                name: &str,
            ) -> Result<Option<super::accounts::AccountRow>, sqlx::Error> {
                let sql = format!(
                    "SELECT {} FROM accounts a WHERE lower(a.name) = lower($1)",
                    super::accounts::ACCOUNT_COLUMNS
                );
                let row = sqlx::query_as::<$db, super::accounts::AccountTuple>(&sql)
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(super::accounts::account))
            }

            pub(in crate::server::store) async fn account_by_id(
                &self,
                id: i64,
            ) -> Result<Option<super::accounts::AccountRow>, sqlx::Error> {
                let sql = format!(
                    "SELECT {} FROM accounts a WHERE a.id = $1",
                    super::accounts::ACCOUNT_COLUMNS
                );
                let row = sqlx::query_as::<$db, super::accounts::AccountTuple>(&sql)
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(super::accounts::account))
            }

            pub(in crate::server::store) async fn list_accounts(
                &self,
                limit: i64,
            ) -> Result<Vec<super::accounts::AccountRow>, sqlx::Error> {
                let sql = format!(
                    "SELECT {} FROM accounts a ORDER BY lower(a.name) LIMIT $1",
                    super::accounts::ACCOUNT_COLUMNS
                );
                let rows = sqlx::query_as::<$db, super::accounts::AccountTuple>(&sql)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(super::accounts::account).collect())
            }

            pub(in crate::server::store) async fn usage(
                &self,
                account: Option<i64>,
                limit: i64,
            ) -> Result<Vec<super::accounts::UsageRow>, sqlx::Error> {
                let sql = format!(
                    "{} AND ($1 IS NULL OR a.id = $1) GROUP BY a.name, m.author, day \
                     ORDER BY day DESC, a.name, m.author LIMIT $2",
                    super::accounts::USAGE_SELECT
                );
                sqlx::query_as::<$db, super::accounts::UsageRow>(&sql)
                    .bind(account)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
            }

            pub(in crate::server::store) async fn set_disabled(
                &self,
                id: i64,
                disabled: bool,
            ) -> Result<bool, sqlx::Error> {
                sqlx::query::<$db>("UPDATE accounts SET disabled = $2 WHERE id = $1")
                    .bind(id)
                    .bind(i64::from(disabled))
                    .execute(&self.pool)
                    .await
                    .map(|done| done.rows_affected() == 1)
            }

            pub(in crate::server::store) async fn insert_join_link(
                &self,
                link: &super::accounts::NewJoinLink<'_>,
            ) -> Result<(), sqlx::Error> {
                sqlx::query::<$db>(
                    "INSERT INTO join_links (token_hash, kind, role, uses_left, expires_at, created_by) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(link.token_hash)
                .bind(link.kind)
                .bind(link.role)
                .bind(link.uses)
                .bind(link.expires_at)
                .bind(link.created_by)
                .execute(&self.pool)
                .await
                .map(drop)
            }

            pub(in crate::server::store) async fn insert_session(
                &self,
                token_hash: &str,
                account_id: i64,
                now: i64,
                keep: i64,
            ) -> Result<(), sqlx::Error> {
                let mut tx = self.pool.begin().await?;
                sqlx::query::<$db>(super::accounts::INSERT_SESSION)
                .bind(token_hash)
                .bind(account_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query::<$db>(
                    "DELETE FROM sessions WHERE account_id = $1 AND token_hash NOT IN \
                     (SELECT token_hash FROM sessions WHERE account_id = $1 \
                      ORDER BY last_seen_at DESC, created_at DESC LIMIT $2)",
                )
                .bind(account_id)
                .bind(keep)
                .execute(&mut *tx)
                .await?;
                tx.commit().await
            }

            pub(in crate::server::store) async fn session_account(
                &self,
                token_hash: &str,
                window: super::accounts::SessionWindow,
            ) -> Result<Option<(super::accounts::AccountRow, i64)>, sqlx::Error> {
                let sql = format!(
                    "SELECT {}, s.last_seen_at FROM sessions s JOIN accounts a ON a.id = s.account_id \
                     WHERE s.token_hash = $1 AND s.last_seen_at >= $2 AND s.created_at >= $3",
                    super::accounts::ACCOUNT_COLUMNS
                );
                let row = sqlx::query_as::<$db, (i64, String, String, Option<String>, i64, i64)>(&sql)
                    .bind(token_hash)
                    .bind(window.idle_before)
                    .bind(window.created_before)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|(id, name, role, hash, disabled, seen)| {
                    (super::accounts::account((id, name, role, hash, disabled)), seen)
                }))
            }

            pub(in crate::server::store) async fn live_sessions(
                &self,
                token_hashes: &[String],
                window: super::accounts::SessionWindow,
            ) -> Result<Vec<String>, sqlx::Error> {
                if token_hashes.is_empty() {
                    return Ok(Vec::new());
                }
                let list = (3..3 + token_hashes.len())
                    .map(|n| format!("${n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "SELECT s.token_hash FROM sessions s JOIN accounts a ON a.id = s.account_id \
                     WHERE s.last_seen_at >= $1 AND s.created_at >= $2 AND a.disabled = 0 \
                     AND s.token_hash IN ({list})"
                );
                let mut query = sqlx::query_scalar::<$db, String>(&sql)
                    .bind(window.idle_before)
                    .bind(window.created_before);
                for hash in token_hashes {
                    query = query.bind(hash);
                }
                query.fetch_all(&self.pool).await
            }

            pub(in crate::server::store) async fn touch_session(
                &self,
                token_hash: &str,
                now: i64,
            ) -> Result<(), sqlx::Error> {
                sqlx::query::<$db>("UPDATE sessions SET last_seen_at = $2 WHERE token_hash = $1")
                    .bind(token_hash)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map(drop)
            }

            pub(in crate::server::store) async fn delete_session(
                &self,
                token_hash: &str,
            ) -> Result<(), sqlx::Error> {
                sqlx::query::<$db>("DELETE FROM sessions WHERE token_hash = $1")
                    .bind(token_hash)
                    .execute(&self.pool)
                    .await
                    .map(drop)
            }

            pub(in crate::server::store) async fn delete_sessions_of(
                &self,
                account_id: i64,
            ) -> Result<u64, sqlx::Error> {
                sqlx::query::<$db>("DELETE FROM sessions WHERE account_id = $1")
                    .bind(account_id)
                    .execute(&self.pool)
                    .await
                    .map(|done| done.rows_affected())
            }

            pub(in crate::server::store) async fn prune_accounts(
                &self,
                now: i64,
                window: super::accounts::SessionWindow,
            ) -> Result<u64, sqlx::Error> {
                let sessions = sqlx::query::<$db>(
                    "DELETE FROM sessions WHERE last_seen_at < $1 OR created_at < $2",
                )
                .bind(window.idle_before)
                .bind(window.created_before)
                .execute(&self.pool)
                .await?;
                let links = sqlx::query::<$db>(
                    "DELETE FROM join_links WHERE uses_left <= 0 OR expires_at <= $1",
                )
                .bind(now)
                .execute(&self.pool)
                .await?;
                let challenges = sqlx::query::<$db>(
                    "DELETE FROM sign_in_challenges WHERE expires_at <= $1",
                )
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(sessions.rows_affected() + links.rows_affected() + challenges.rows_affected())
            }
        }
    };
}

pub(super) use account_statements;

/// Runs `$call` (a method of the statements above) on whichever backend
/// `$self` holds, naming what it was doing in the error.
macro_rules! on_accounts {
    ($self:expr, $s:ident => $call:expr, $($doing:tt)*) => {
        async {
            match &$self.0 {
                Backend::Sqlite($s) => $call,
                Backend::Postgres($s) => $call,
            }
        }
        .await
        .map_err(doing!($($doing)*))
    };
}

pub(super) use on_accounts;

impl Store {
    pub async fn account_count(&self) -> Result<i64, StoreError> {
        on_accounts!(self, s => s.account_count().await, "Store::account_count")
    }

    /// The account with this name, in any letter case.
    pub async fn account_named(&self, name: &str) -> Result<Option<AccountRow>, StoreError> {
        on_accounts!(self, s => s.account_named(name).await, "Store::account_named")
    }

    pub async fn account_by_id(&self, id: i64) -> Result<Option<AccountRow>, StoreError> {
        on_accounts!(self, s => s.account_by_id(id).await, "Store::account_by_id ({id})")
    }

    /// Up to `limit` accounts by name.
    pub async fn list_accounts(&self, limit: i64) -> Result<Vec<AccountRow>, StoreError> {
        on_accounts!(self, s => s.list_accounts(limit).await, "Store::list_accounts")
    }

    /// Usage per person, bot and day, newest first: one account's, or
    /// (`None`) everyone's; at most `limit` rows.
    pub async fn usage(
        &self,
        account: Option<i64>,
        limit: i64,
    ) -> Result<Vec<UsageRow>, StoreError> {
        on_accounts!(self, s => s.usage(account, limit).await, "Store::usage")
    }

    /// Disables or enables account `id`; false if there is none.
    pub async fn set_disabled(&self, id: i64, disabled: bool) -> Result<bool, StoreError> {
        on_accounts!(self, s => s.set_disabled(id, disabled).await, "Store::set_disabled (account {id})")
    }

    pub async fn insert_join_link(&self, link: &NewJoinLink<'_>) -> Result<(), StoreError> {
        on_accounts!(self, s => s.insert_join_link(link).await, "Store::insert_join_link ({})", link.kind)
    }

    /// Records a session, keeping the account's `keep` most recently used.
    pub async fn insert_session(
        &self,
        token_hash: &str,
        account_id: i64,
        now: i64,
        keep: u32,
    ) -> Result<(), StoreError> {
        on_accounts!(
            self,
            s => s.insert_session(token_hash, account_id, now, i64::from(keep)).await,
            "Store::insert_session (account {account_id})"
        )
    }

    /// The account a live session belongs to, and when it was last used.
    pub async fn session_account(
        &self,
        token_hash: &str,
        window: SessionWindow,
    ) -> Result<Option<(AccountRow, i64)>, StoreError> {
        on_accounts!(self, s => s.session_account(token_hash, window).await, "Store::session_account")
    }

    /// Which of these sessions are live (for the streams that hold them).
    pub async fn live_sessions(
        &self,
        token_hashes: &[String],
        window: SessionWindow,
    ) -> Result<Vec<String>, StoreError> {
        on_accounts!(self, s => s.live_sessions(token_hashes, window).await, "Store::live_sessions")
    }

    pub async fn touch_session(&self, token_hash: &str, now: i64) -> Result<(), StoreError> {
        on_accounts!(self, s => s.touch_session(token_hash, now).await, "Store::touch_session")
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        on_accounts!(self, s => s.delete_session(token_hash).await, "Store::delete_session")
    }

    /// Ends every session of an account ("sign out everywhere").
    pub async fn delete_sessions_of(&self, account_id: i64) -> Result<u64, StoreError> {
        on_accounts!(
            self,
            s => s.delete_sessions_of(account_id).await,
            "Store::delete_sessions_of (account {account_id})"
        )
    }

    /// Deletes expired sessions, used-up or expired links and expired
    /// sign-in challenges; how many.
    pub async fn prune_accounts(&self, now: i64, window: SessionWindow) -> Result<u64, StoreError> {
        on_accounts!(self, s => s.prune_accounts(now, window).await, "Store::prune_accounts")
    }
}
