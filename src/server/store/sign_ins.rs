//! Sign-in methods besides a password (`sign_in_challenges`,
//! `oidc_identities`, `passkeys`): the statements, once for both backends
//! (`$n` parameters, integer and text columns, as in `accounts.rs`), and
//! the [`Store`] methods that run them.
//!
//! Invariants:
//! - A challenge is taken once: [`Store::take_challenge`] deletes the row
//!   it returns, so a replayed OpenID Connect `state` or passkey ceremony
//!   finds nothing. Expired challenges are never returned, and are deleted
//!   with expired sessions ([`Store::prune_accounts`]).
//! - An OpenID Connect identity (issuer, subject) belongs to one account.
//! - Making an account through a sign-in method is one transaction, as
//!   with a password: the link's use (when there is one), the account, its
//!   identity or passkey, and its first session, or nothing.

use super::{
    accounts::{on_accounts, AccountRow, JoinRefusal},
    Backend, Store, StoreError,
};

/// A ceremony in progress, to be stored (its token already hashed).
#[derive(Clone, Debug)]
pub struct NewChallenge<'a> {
    pub token_hash: &'a str,
    /// `oidc`, `passkey_register` or `passkey_sign_in`.
    pub kind: &'a str,
    pub data: &'a str,
    pub expires_at: i64,
}

/// What a new account signs in with besides (or instead of) a password.
#[derive(Clone, Copy, Debug)]
pub enum Credential<'a> {
    Password(&'a str),
    /// A credential id and webauthn-rs's record of the passkey.
    Passkey {
        id: &'a str,
        passkey: &'a str,
    },
    /// An OpenID Connect issuer and subject.
    Oidc {
        issuer: &'a str,
        subject: &'a str,
    },
}

/// An account to be made with its first session: through a setup or invite
/// link (`link_hash`), or, for OpenID Connect's join rule, with `role`.
#[derive(Clone, Debug)]
pub struct NewMember<'a> {
    pub link_hash: Option<&'a str>,
    /// The role when there is no link (a link carries its own).
    pub role: &'a str,
    pub name: &'a str,
    pub credential: Credential<'a>,
    pub session_hash: &'a str,
    pub now: i64,
}

/// A passkey as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasskeyRow {
    pub credential_id: String,
    pub passkey: String,
    pub created_at: i64,
    pub last_used_at: i64,
}

macro_rules! sign_in_statements {
    ($store:ty, $db:ty) => {
        impl $store {
            pub(in crate::server::store) async fn count_challenges(&self, now: i64) -> Result<i64, sqlx::Error> {
                sqlx::query_scalar::<$db, i64>(
                    "SELECT COUNT(*) FROM sign_in_challenges WHERE expires_at > $1",
                )
                .bind(now)
                .fetch_one(&self.pool)
                .await
            }

            pub(in crate::server::store) async fn insert_challenge(
                &self,
                c: &super::sign_ins::NewChallenge<'_>,
            ) -> Result<(), sqlx::Error> {
                sqlx::query::<$db>(
                    "INSERT INTO sign_in_challenges (token_hash, kind, data, expires_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(c.token_hash)
                .bind(c.kind)
                .bind(c.data)
                .bind(c.expires_at)
                .execute(&self.pool)
                .await
                .map(drop)
            }

            pub(in crate::server::store) async fn take_challenge(
                &self,
                token_hash: &str,
                kind: &str,
                now: i64,
            ) -> Result<Option<String>, sqlx::Error> {
                sqlx::query_scalar::<$db, String>(
                    "DELETE FROM sign_in_challenges WHERE token_hash = $1 AND kind = $2 \
                     AND expires_at > $3 RETURNING data",
                )
                .bind(token_hash)
                .bind(kind)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
            }

            pub(in crate::server::store) async fn oidc_account(
                &self,
                issuer: &str,
                subject: &str,
            ) -> Result<Option<super::accounts::AccountRow>, sqlx::Error> {
                let sql = format!(
                    "SELECT {} FROM oidc_identities o JOIN accounts a ON a.id = o.account_id \
                     WHERE o.issuer = $1 AND o.subject = $2",
                    super::accounts::ACCOUNT_COLUMNS
                );
                let row = sqlx::query_as::<$db, super::accounts::AccountTuple>(&sql)
                    .bind(issuer)
                    .bind(subject)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(super::accounts::account))
            }

            /// False when the identity is already some account's.
            pub(in crate::server::store) async fn link_oidc(
                &self,
                issuer: &str,
                subject: &str,
                account_id: i64,
                now: i64,
            ) -> Result<bool, sqlx::Error> {
                sqlx::query::<$db>(
                    "INSERT INTO oidc_identities (issuer, subject, account_id, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(issuer)
                .bind(subject)
                .bind(account_id)
                .bind(now)
                .execute(&self.pool)
                .await
                .map(|done| done.rows_affected() == 1)
            }

            pub(in crate::server::store) async fn passkeys_of(
                &self,
                account_id: i64,
            ) -> Result<Vec<super::sign_ins::PasskeyRow>, sqlx::Error> {
                let rows = sqlx::query_as::<$db, (String, String, i64, i64)>(
                    "SELECT credential_id, passkey, created_at, last_used_at FROM passkeys \
                     WHERE account_id = $1 ORDER BY id",
                )
                .bind(account_id)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(credential_id, passkey, created_at, last_used_at)| {
                        super::sign_ins::PasskeyRow {
                            credential_id,
                            passkey,
                            created_at,
                            last_used_at,
                        }
                    })
                    .collect())
            }

            pub(in crate::server::store) async fn insert_passkey(
                &self,
                account_id: i64,
                credential_id: &str,
                passkey: &str,
                now: i64,
            ) -> Result<bool, sqlx::Error> {
                sqlx::query::<$db>(
                    "INSERT INTO passkeys (account_id, credential_id, passkey, created_at, last_used_at) \
                     VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING",
                )
                .bind(account_id)
                .bind(credential_id)
                .bind(passkey)
                .bind(now)
                .execute(&self.pool)
                .await
                .map(|done| done.rows_affected() == 1)
            }

            /// Deletes one of an account's passkeys unless it is the last way
            /// the account signs in (no password, no other passkey, no
            /// linked identity): `Some(deleted)`, or `None` when it is.
            pub(in crate::server::store) async fn delete_passkey(
                &self,
                account_id: i64,
                credential_id: &str,
            ) -> Result<Option<bool>, sqlx::Error> {
                let mut tx = self.pool.begin().await?;
                let (others, password, linked): (i64, i64, i64) = sqlx::query_as::<$db, (i64, i64, i64)>(
                    "SELECT \
                     (SELECT COUNT(*) FROM passkeys WHERE account_id = $1 AND credential_id <> $2), \
                     (SELECT COUNT(*) FROM accounts WHERE id = $1 AND password_hash IS NOT NULL), \
                     (SELECT COUNT(*) FROM oidc_identities WHERE account_id = $1)",
                )
                .bind(account_id)
                .bind(credential_id)
                .fetch_one(&mut *tx)
                .await?;
                if others + password + linked == 0 {
                    return Ok(None);
                }
                let deleted = sqlx::query::<$db>(
                    "DELETE FROM passkeys WHERE account_id = $1 AND credential_id = $2",
                )
                .bind(account_id)
                .bind(credential_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                tx.commit().await?;
                Ok(Some(deleted == 1))
            }

            pub(in crate::server::store) async fn update_passkey(
                &self,
                credential_id: &str,
                passkey: &str,
                now: i64,
            ) -> Result<(), sqlx::Error> {
                sqlx::query::<$db>(
                    "UPDATE passkeys SET passkey = $2, last_used_at = $3 WHERE credential_id = $1",
                )
                .bind(credential_id)
                .bind(passkey)
                .bind(now)
                .execute(&self.pool)
                .await
                .map(drop)
            }

            pub(in crate::server::store) async fn join_with(
                &self,
                new: &super::sign_ins::NewMember<'_>,
            ) -> Result<Result<super::accounts::AccountRow, super::accounts::JoinRefusal>, sqlx::Error>
            {
                use super::accounts::JoinRefusal;
                use super::sign_ins::Credential;
                let mut tx = self.pool.begin().await?;
                let mut role = new.role.to_owned();
                if let Some(link_hash) = new.link_hash {
                    // The link's use first: it takes the write lock (SQLite)
                    // or the link's row (PostgreSQL) before anything is read.
                    let link: Option<(String, String)> = sqlx::query_as::<$db, (String, String)>(
                        "UPDATE join_links SET uses_left = uses_left - 1 \
                         WHERE token_hash = $1 AND uses_left > 0 AND expires_at > $2 \
                         RETURNING kind, role",
                    )
                    .bind(link_hash)
                    .bind(new.now)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some((kind, link_role)) = link else {
                        return Ok(Err(JoinRefusal::Link));
                    };
                    if kind == "setup" {
                        let existing: i64 = sqlx::query_scalar::<$db, i64>("SELECT COUNT(*) FROM accounts")
                            .fetch_one(&mut *tx)
                            .await?;
                        if existing > 0 {
                            return Ok(Err(JoinRefusal::Link));
                        }
                    }
                    role = link_role;
                }
                let password = match new.credential {
                    Credential::Password(hash) => Some(hash),
                    _ => None,
                };
                let inserted = sqlx::query_scalar::<$db, i64>(
                    "INSERT INTO accounts (name, role, password_hash, disabled, created_at) \
                     VALUES ($1, $2, $3, 0, $4) RETURNING id",
                )
                .bind(new.name)
                .bind(&role)
                .bind(password)
                .bind(new.now)
                .fetch_one(&mut *tx)
                .await;
                let id = match inserted {
                    Ok(id) => id,
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                        return Ok(Err(JoinRefusal::NameTaken));
                    }
                    Err(e) => return Err(e),
                };
                match new.credential {
                    Credential::Password(_) => {}
                    Credential::Passkey { id: credential_id, passkey } => {
                        sqlx::query::<$db>(
                            "INSERT INTO passkeys (account_id, credential_id, passkey, created_at, last_used_at) \
                             VALUES ($1, $2, $3, $4, $4)",
                        )
                        .bind(id)
                        .bind(credential_id)
                        .bind(passkey)
                        .bind(new.now)
                        .execute(&mut *tx)
                        .await?;
                    }
                    Credential::Oidc { issuer, subject } => {
                        sqlx::query::<$db>(
                            "INSERT INTO oidc_identities (issuer, subject, account_id, created_at) \
                             VALUES ($1, $2, $3, $4)",
                        )
                        .bind(issuer)
                        .bind(subject)
                        .bind(id)
                        .bind(new.now)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                sqlx::query::<$db>(super::accounts::INSERT_SESSION)
                .bind(new.session_hash)
                .bind(id)
                .bind(new.now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(Ok(super::accounts::AccountRow {
                    id,
                    name: new.name.to_owned(),
                    role,
                    password_hash: password.map(str::to_owned),
                    disabled: false,
                }))
            }
        }
    };
}

pub(super) use sign_in_statements;

impl Store {
    /// Unexpired ceremonies in progress (their table's bound is checked
    /// before adding one).
    pub async fn count_challenges(&self, now: i64) -> Result<i64, StoreError> {
        on_accounts!(self, s => s.count_challenges(now).await, "Store::count_challenges")
    }

    pub async fn insert_challenge(&self, challenge: &NewChallenge<'_>) -> Result<(), StoreError> {
        on_accounts!(self, s => s.insert_challenge(challenge).await, "Store::insert_challenge ({})", challenge.kind)
    }

    /// Takes a live challenge of `kind` (deleting it); `None` when there is
    /// none: unknown, expired, or already taken.
    pub async fn take_challenge(
        &self,
        token_hash: &str,
        kind: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        on_accounts!(self, s => s.take_challenge(token_hash, kind, now).await, "Store::take_challenge ({kind})")
    }

    /// The account an OpenID Connect identity is linked to.
    pub async fn oidc_account(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<AccountRow>, StoreError> {
        on_accounts!(self, s => s.oidc_account(issuer, subject).await, "Store::oidc_account")
    }

    /// Links an identity to an account; false if it is some account's already.
    pub async fn link_oidc(
        &self,
        issuer: &str,
        subject: &str,
        account_id: i64,
    ) -> Result<bool, StoreError> {
        let now = crate::server::now_ms();
        on_accounts!(self, s => s.link_oidc(issuer, subject, account_id, now).await, "Store::link_oidc (account {account_id})")
    }

    pub async fn passkeys_of(&self, account_id: i64) -> Result<Vec<PasskeyRow>, StoreError> {
        on_accounts!(self, s => s.passkeys_of(account_id).await, "Store::passkeys_of (account {account_id})")
    }

    /// Adds a passkey to an account; false if that credential is stored already.
    pub async fn insert_passkey(
        &self,
        account_id: i64,
        credential_id: &str,
        passkey: &str,
    ) -> Result<bool, StoreError> {
        let now = crate::server::now_ms();
        on_accounts!(
            self,
            s => s.insert_passkey(account_id, credential_id, passkey, now).await,
            "Store::insert_passkey (account {account_id})"
        )
    }

    /// Deletes a passkey of an account, unless it is the account's last way
    /// to sign in (`None`); `Some(false)` when there was no such passkey.
    pub async fn delete_passkey(
        &self,
        account_id: i64,
        credential_id: &str,
    ) -> Result<Option<bool>, StoreError> {
        on_accounts!(
            self,
            s => s.delete_passkey(account_id, credential_id).await,
            "Store::delete_passkey (account {account_id})"
        )
    }

    /// Stores a passkey's record after a use (its signature counter).
    pub async fn update_passkey(
        &self,
        credential_id: &str,
        passkey: &str,
    ) -> Result<(), StoreError> {
        let now = crate::server::now_ms();
        on_accounts!(self, s => s.update_passkey(credential_id, passkey, now).await, "Store::update_passkey")
    }

    /// Makes an account with its credential and first session (see the
    /// module's invariants).
    pub async fn join_with(
        &self,
        new: &NewMember<'_>,
    ) -> Result<Result<AccountRow, JoinRefusal>, StoreError> {
        on_accounts!(self, s => s.join_with(new).await, "Store::join_with")
    }
}
