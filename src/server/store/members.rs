//! Private threads' members (`thread_members`): the statements, once for
//! both backends (`$n` parameters, integer and text columns, as in
//! `accounts.rs`), and the [`Store`] methods that run them.
//!
//! Invariants:
//! - A thread is private exactly when it has member rows; it gets them when
//!   it is made, in the same transaction, its owner first.
//! - A thread has one owner, and the owner's row is never removed.
//! - A thread has at most the `cap` members [`Store::add_member`] is given.

use super::{accounts::on_accounts, Backend, Store, StoreError};

/// Who may see a thread, as one read answers it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    /// The owner of a private thread; `None`: not private.
    pub owner: Option<String>,
    /// Whether the person asked about is a member.
    pub member: bool,
}

/// One member of a private thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRow {
    pub name: String,
    pub owner: bool,
    pub added_at: i64,
}

/// Why adding a member changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddRefusal {
    AlreadyMember,
    Full,
}

macro_rules! member_statements {
    ($store:ty, $db:ty) => {
        impl $store {
            pub(in crate::server::store) async fn create_private_thread(
                &self,
                id: &str,
                title: &str,
                owner: &str,
                now: i64,
            ) -> Result<(), sqlx::Error> {
                let mut tx = self.pool.begin().await?;
                sqlx::query::<$db>(
                    "INSERT INTO threads (id, title, listed, created_at, last_activity_at) \
                     VALUES ($1, $2, FALSE, $3, $3)",
                )
                .bind(id)
                .bind(title)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query::<$db>(
                    "INSERT INTO thread_members (thread_id, member, owner, added_at) \
                     VALUES ($1, $2, 1, $3)",
                )
                .bind(id)
                .bind(owner)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await
            }

            pub(in crate::server::store) async fn membership(
                &self,
                thread: &str,
                who: Option<&str>,
            ) -> Result<super::members::Membership, sqlx::Error> {
                let (owner, mine): (Option<String>, i64) = sqlx::query_as::<$db, (Option<String>, i64)>(
                    "SELECT MAX(CASE WHEN owner = 1 THEN member END), \
                     CAST(COALESCE(SUM(CASE WHEN member = $2 THEN 1 ELSE 0 END), 0) AS BIGINT) \
                     FROM thread_members WHERE thread_id = $1",
                )
                .bind(thread)
                .bind(who)
                .fetch_one(&self.pool)
                .await?;
                Ok(super::members::Membership {
                    owner,
                    member: mine > 0,
                })
            }

            pub(in crate::server::store) async fn member_threads(
                &self,
                member: &str,
                limit: i64,
            ) -> Result<Vec<crate::model::ThreadSummary>, sqlx::Error> {
                sqlx::query_as::<$db, crate::model::ThreadSummary>(
                    "SELECT t.id, t.title, t.last_activity_at, \
                     (SELECT COUNT(*) FROM messages m WHERE m.thread_id = t.id AND m.status = 'streaming') AS live \
                     FROM thread_members tm JOIN threads t ON t.id = tm.thread_id \
                     WHERE tm.member = $1 ORDER BY t.last_activity_at DESC, t.id LIMIT $2",
                )
                .bind(member)
                .bind(limit)
                .fetch_all(&self.pool)
                .await
            }

            pub(in crate::server::store) async fn members_of(
                &self,
                thread: &str,
                limit: i64,
            ) -> Result<Vec<super::members::MemberRow>, sqlx::Error> {
                let rows = sqlx::query_as::<$db, (String, i64, i64)>(
                    "SELECT member, owner, added_at FROM thread_members WHERE thread_id = $1 \
                     ORDER BY owner DESC, lower(member) LIMIT $2",
                )
                .bind(thread)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(name, owner, added_at)| super::members::MemberRow {
                        name,
                        owner: owner != 0,
                        added_at,
                    })
                    .collect())
            }

            pub(in crate::server::store) async fn add_member(
                &self,
                thread: &str,
                member: &str,
                now: i64,
                cap: i64,
            ) -> Result<Result<(), super::members::AddRefusal>, sqlx::Error> {
                use super::members::AddRefusal;
                // One statement: the count and the insert cannot race.
                let inserted = sqlx::query::<$db>(
                    "INSERT INTO thread_members (thread_id, member, owner, added_at) \
                     SELECT $1, $2, 0, $3 \
                     WHERE (SELECT COUNT(*) FROM thread_members WHERE thread_id = $1) < $4 \
                     ON CONFLICT DO NOTHING",
                )
                .bind(thread)
                .bind(member)
                .bind(now)
                .bind(cap)
                .execute(&self.pool)
                .await?
                .rows_affected();
                if inserted == 1 {
                    return Ok(Ok(()));
                }
                let exists = sqlx::query_scalar::<$db, i64>(
                    "SELECT COUNT(*) FROM thread_members WHERE thread_id = $1 AND member = $2",
                )
                .bind(thread)
                .bind(member)
                .fetch_one(&self.pool)
                .await?;
                Ok(Err(if exists > 0 {
                    AddRefusal::AlreadyMember
                } else {
                    AddRefusal::Full
                }))
            }

            pub(in crate::server::store) async fn remove_member(
                &self,
                thread: &str,
                member: &str,
            ) -> Result<bool, sqlx::Error> {
                sqlx::query::<$db>(
                    "DELETE FROM thread_members WHERE thread_id = $1 AND member = $2 AND owner = 0",
                )
                .bind(thread)
                .bind(member)
                .execute(&self.pool)
                .await
                .map(|done| done.rows_affected() == 1)
            }
        }
    };
}

pub(super) use member_statements;

impl Store {
    /// Makes a private thread owned by `owner`, its first member.
    pub async fn create_private_thread(
        &self,
        id: &str,
        title: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        let now = crate::server::now_ms();
        on_accounts!(
            self,
            s => s.create_private_thread(id, title, owner, now).await,
            "Store::create_private_thread (thread {id})"
        )
    }

    /// Whether `thread` is private (its owner) and whether `who` is a
    /// member; `None` is nobody's name.
    pub async fn membership(
        &self,
        thread: &str,
        who: Option<&str>,
    ) -> Result<Membership, StoreError> {
        on_accounts!(self, s => s.membership(thread, who).await, "Store::membership (thread {thread})")
    }

    /// The private threads `member` belongs to, by last activity.
    pub async fn member_threads(
        &self,
        member: &str,
        limit: i64,
    ) -> Result<Vec<crate::model::ThreadSummary>, StoreError> {
        on_accounts!(self, s => s.member_threads(member, limit).await, "Store::member_threads")
    }

    /// A private thread's members, its owner first; at most `limit`.
    pub async fn members_of(&self, thread: &str, limit: i64) -> Result<Vec<MemberRow>, StoreError> {
        on_accounts!(self, s => s.members_of(thread, limit).await, "Store::members_of (thread {thread})")
    }

    /// Adds a member, unless the thread already has `cap`.
    pub async fn add_member(
        &self,
        thread: &str,
        member: &str,
        cap: u32,
    ) -> Result<Result<(), AddRefusal>, StoreError> {
        let now = crate::server::now_ms();
        on_accounts!(
            self,
            s => s.add_member(thread, member, now, i64::from(cap)).await,
            "Store::add_member (thread {thread})"
        )
    }

    /// Removes a member who is not the owner; false if there was none.
    pub async fn remove_member(&self, thread: &str, member: &str) -> Result<bool, StoreError> {
        on_accounts!(self, s => s.remove_member(thread, member).await, "Store::remove_member (thread {thread})")
    }
}
