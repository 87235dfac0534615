//! Private threads (`access.mode = "accounts"` or `"proxy"`): who may see a
//! thread, and its owner adding and removing members.
//!
//! [`Members::thread`] is the one check every route that names a thread
//! makes (pages, both event streams, export, search, every server function):
//! a private thread is answered exactly like an unknown id to anyone who is
//! not a member, so its existence does not leak. A member is a name as the
//! access mode gives it: the account's name (unique in any letter case, and
//! never changed) or the proxy's identity. In `open` mode nobody has a name
//! the server vouches for, so nobody is a member: private threads (made in
//! another mode) are invisible there, and new threads cannot be private.
//!
//! A removed member's open streams of the thread close: each stream holds
//! its membership in a [`Watch`], checked against the database every
//! `revalidate_secs` on every instance.

use std::{
    collections::{BTreeMap, HashSet},
    time::Duration,
};

use super::watch::{Watch, Watching};
use crate::error::AppError;
use crate::model::{AccessMode, Thread};
use crate::server::{
    store::{AddRefusal, MemberRow, Store},
    Background,
};

/// Longest member name, in characters (account names are shorter).
const MAX_NAME_CHARS: usize = 64;

#[derive(Clone)]
pub struct Members {
    store: Store,
    mode: AccessMode,
    cap: u32,
    /// Open streams of private threads, keyed by thread and member.
    watch: Watch,
}

impl Members {
    pub fn new(store: Store, mode: AccessMode, cap: u32) -> Self {
        Self {
            store,
            mode,
            cap,
            watch: Watch::default(),
        }
    }

    /// Whether new threads may be private here (someone's name is vouched for).
    pub fn private_threads(&self) -> bool {
        self.mode != AccessMode::Open
    }

    /// The thread as `who` may see it: the 404 an unknown id gets when it
    /// is private and `who` is not a member. `who` is the requester's
    /// identity, which `open` mode never has (`None`: nobody).
    pub async fn thread(&self, id: &str, who: Option<&str>) -> Result<Thread, AppError> {
        let mut thread = self.store.existing_thread(id).await?;
        if !thread.listed {
            let membership = self.store.membership(id, who).await?;
            if membership.owner.is_some() && !membership.member {
                return Err(AppError::no_thread(id));
            }
            thread.owner = membership.owner;
        }
        Ok(thread)
    }

    /// The private threads `who` is a member of, by last activity; none in
    /// `open` mode.
    pub async fn threads_of(
        &self,
        who: Option<&str>,
        limit: i64,
    ) -> Result<Vec<crate::model::ThreadSummary>, AppError> {
        match who {
            Some(name) => Ok(self.store.member_threads(name, limit).await?),
            None => Ok(Vec::new()),
        }
    }

    /// A private thread's members, for one of them.
    pub async fn list(
        &self,
        id: &str,
        who: Option<&str>,
    ) -> Result<(Thread, Vec<MemberRow>), AppError> {
        let thread = self.private(id, who).await?;
        let members = self.store.members_of(id, i64::from(self.cap)).await?;
        Ok((thread, members))
    }

    /// The owner adds `name`; in `accounts` mode it must name an account
    /// (stored as the account spells it). Answers the name as stored.
    pub async fn add(&self, id: &str, by: Option<&str>, name: &str) -> Result<String, AppError> {
        self.owned(id, by).await?;
        let name = self.member_name(name).await?;
        match self.store.add_member(id, &name, self.cap).await? {
            Ok(()) => {
                tracing::info!(thread_id = id, member = %name, "member added");
                Ok(name)
            }
            Err(AddRefusal::AlreadyMember) => Err(AppError::Conflict(format!(
                "{name} is already a member of this thread."
            ))),
            Err(AddRefusal::Full) => Err(AppError::Conflict(format!(
                "This thread has its most members ({}): remove someone first.",
                self.cap
            ))),
        }
    }

    /// The owner removes `name` (never themselves); their open streams of
    /// the thread close within `revalidate_secs`.
    pub async fn remove(&self, id: &str, by: Option<&str>, name: &str) -> Result<(), AppError> {
        let owner = self.owned(id, by).await?;
        if name == owner {
            return Err(AppError::Conflict(
                "The owner of a private thread stays its member.".into(),
            ));
        }
        if !self.store.remove_member(id, name).await? {
            return Err(AppError::NotFound(format!(
                "{name} is not a member of this thread."
            )));
        }
        tracing::info!(thread_id = id, member = %name, "member removed");
        Ok(())
    }

    /// A stream's hold on `who`'s membership of `thread`, when it is a
    /// private thread's (`thread.owner` set by [`Members::thread`]).
    pub fn watch(&self, thread: &Thread, who: Option<&str>) -> Option<Watching> {
        thread.owner.as_ref()?;
        Some(self.watch.watch(&key(&thread.id, who?)))
    }

    /// Checks the memberships open streams hold every `period`, until
    /// shutdown, and ends the streams of those removed.
    pub fn spawn_revalidation(&self, background: &Background, period: Duration) {
        let members = self.clone();
        background.every(period, move || {
            let members = members.clone();
            async move {
                if let Err(e) = members.revalidate().await {
                    tracing::warn!(error = %e, "checking the memberships of open streams failed");
                }
            }
        });
    }

    async fn revalidate(&self) -> Result<usize, AppError> {
        let mut by_thread: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for watched in self.watch.watched() {
            if let Some((thread, _)) = watched.split_once('\0') {
                by_thread
                    .entry(thread.to_owned())
                    .or_default()
                    .push(watched.clone());
            }
        }
        let mut ended = 0;
        for (thread, checked) in by_thread {
            // A deleted thread has no members: its streams end too.
            let live: HashSet<String> = self
                .store
                .members_of(&thread, i64::from(self.cap))
                .await?
                .into_iter()
                .map(|m| key(&thread, &m.name))
                .collect();
            ended += self.watch.end_all_but(&checked, &live);
        }
        if ended > 0 {
            tracing::info!(streams = ended, "event streams of removed members closed");
        }
        Ok(ended)
    }

    /// The private thread, for a member; 404 otherwise, and 404 for a
    /// thread that is not private (it has no members to show).
    async fn private(&self, id: &str, who: Option<&str>) -> Result<Thread, AppError> {
        let thread = self.thread(id, who).await?;
        if thread.owner.is_none() {
            return Err(AppError::NotFound(
                "This thread is not private: it has no members.".into(),
            ));
        }
        Ok(thread)
    }

    /// The owner's name, when `by` owns the private thread; 403 for another
    /// member.
    async fn owned(&self, id: &str, by: Option<&str>) -> Result<String, AppError> {
        let owner = self.private(id, by).await?.owner.unwrap_or_default();
        if Some(owner.as_str()) != by {
            return Err(AppError::Forbidden(format!(
                "Only {owner}, who made this thread, adds and removes its members."
            )));
        }
        Ok(owner)
    }

    /// A name to add, as stored: the account's own spelling in `accounts`
    /// mode (404 when there is none), the identity as given with a proxy.
    async fn member_name(&self, name: &str) -> Result<String, AppError> {
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            return Err(AppError::Invalid(format!(
                "A member's name has 1 to {MAX_NAME_CHARS} characters."
            )));
        }
        if self.mode != AccessMode::Accounts {
            return Ok(name.to_owned());
        }
        match self.store.account_named(name).await? {
            Some(account) if !account.disabled => Ok(account.name),
            _ => Err(AppError::NotFound(format!(
                "There is no account named {name}."
            ))),
        }
    }
}

fn key(thread: &str, member: &str) -> String {
    format!("{thread}\0{member}")
}
