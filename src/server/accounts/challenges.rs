//! Sign-in ceremonies in progress (an OpenID Connect redirect, a passkey
//! registration or sign-in): their state between the request that starts
//! one and the request that ends it, in the database so any instance ends
//! what another started.
//!
//! A ceremony's token is random and only its SHA-256 is stored; taking it
//! deletes it, so a replay finds nothing. Starting one spends from the
//! client's sign-in budget, and the table holds at most
//! `sign_ins_in_progress` live rows (expired ones are pruned with
//! sessions), so a flood of starts is refused with 429 rather than stored.

use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};

use super::{token, Accounts};
use crate::error::AppError;
use crate::server::{now_ms, store::NewChallenge};

/// How long a ceremony may take.
pub const CHALLENGE_MINUTES: i64 = 10;

impl Accounts {
    /// Stores a new ceremony of `kind` holding `data`; its token.
    pub(super) async fn start_challenge(
        &self,
        kind: &str,
        data: &impl Serialize,
        client: &str,
    ) -> Result<String, AppError> {
        self.per_client.take(&self.coordination, client, 1).await?;
        let now = now_ms();
        if self.store.count_challenges(now).await? >= i64::from(self.config.sign_ins_in_progress) {
            return Err(AppError::limited(
                "Too many sign-ins are in progress; try again in a minute.".to_owned(),
                Duration::from_secs(60),
            ));
        }
        let token = token::new_token();
        let data = serde_json::to_string(data)
            .map_err(|e| AppError::internal(format!("a sign-in's state: {e}")))?;
        self.store
            .insert_challenge(&NewChallenge {
                token_hash: &token::token_hash(&token),
                kind,
                data: &data,
                expires_at: now + CHALLENGE_MINUTES * 60_000,
            })
            .await?;
        Ok(token)
    }

    /// Takes the live ceremony of `kind` with this token (once); `None`
    /// when unknown, expired or already taken.
    pub(super) async fn take_challenge<T: DeserializeOwned>(
        &self,
        kind: &str,
        token: &str,
    ) -> Result<Option<T>, AppError> {
        if !token::plausible(token) {
            return Ok(None);
        }
        let Some(data) = self
            .store
            .take_challenge(&token::token_hash(token), kind, now_ms())
            .await?
        else {
            return Ok(None);
        };
        serde_json::from_str(&data)
            .map(Some)
            .map_err(|e| AppError::internal(format!("a stored sign-in's state: {e}")))
    }
}
