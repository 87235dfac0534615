//! Passwords: argon2id through `password-auth` (its PHC strings carry the
//! parameters), on the blocking pool, a few at a time: each hash takes
//! about 19 MiB and tens of milliseconds of one core.

use std::sync::Arc;

use tokio::sync::{OnceCell, Semaphore};

use crate::error::AppError;

pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longer passwords are refused before hashing (bounded work per attempt).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Hashes at once; more wait their turn.
const HASHING_AT_ONCE: usize = 2;

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// Verified against when the account does not exist or has no
    /// password, so such an attempt takes as long as a wrong password
    /// (made on first need).
    decoy: Arc<OnceCell<String>>,
}

impl Default for Hasher {
    fn default() -> Self {
        Self {
            permits: Arc::new(Semaphore::new(HASHING_AT_ONCE)),
            decoy: Arc::default(),
        }
    }
}

/// The reason a new password is refused, if it is.
pub fn refusal(password: &str) -> Option<String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        Some(format!(
            "Use at least {MIN_PASSWORD_CHARS} characters for the password."
        ))
    } else if password.len() > MAX_PASSWORD_BYTES {
        Some(format!(
            "Use at most {MAX_PASSWORD_BYTES} bytes for the password."
        ))
    } else {
        None
    }
}

impl Hasher {
    pub async fn hash(&self, password: &str) -> Result<String, AppError> {
        let password = password.to_owned();
        self.blocking(move || password_auth::generate_hash(password))
            .await
    }

    /// Whether `password` matches `hash` (`None`: checked against the
    /// decoy, and false).
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, AppError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        let known = hash.is_some();
        let hash = match hash {
            Some(hash) => hash.to_owned(),
            None => self
                .decoy
                .get_or_try_init(|| self.hash("a password no account has"))
                .await?
                .clone(),
        };
        let password = password.to_owned();
        let matches = self
            .blocking(move || password_auth::verify_password(password, &hash).is_ok())
            .await?;
        Ok(known && matches)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let _permit = self.permits.acquire().await.map_err(AppError::internal)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(AppError::internal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_verifies_against_its_own_hash_only() {
        let hasher = Hasher::default();
        let hash = hasher.hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(hasher.verify("correct horse", Some(&hash)).await.unwrap());
        assert!(!hasher.verify("correct horsE", Some(&hash)).await.unwrap());
        assert!(!hasher.verify("correct horse", None).await.unwrap());
        assert!(!hasher
            .verify("correct horse", Some("not a hash"))
            .await
            .unwrap());
        let huge = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(!hasher.verify(&huge, Some(&hash)).await.unwrap());
    }

    #[test]
    fn short_and_huge_passwords_are_refused() {
        assert!(refusal("1234567").is_some());
        assert!(refusal("12345678").is_none());
        assert!(refusal(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_some());
    }
}
