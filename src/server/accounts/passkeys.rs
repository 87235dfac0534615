//! Passkeys (WebAuthn) through `webauthn-rs`: making an account with one
//! (a setup or invite link), adding more to an account, and signing in.
//!
//! The relying party is the host the browser asked for (the `Host` the
//! gate admitted), so `localhost` works for local use and a deployment's
//! domain for itself; an IP address cannot be a relying-party id, and a
//! ceremony started there is refused with a message saying so. Each
//! ceremony is two requests: its state (webauthn-rs's, with the origin it
//! was started for) waits in the database ([`super::challenges`]) and is
//! taken once, so a replayed answer finds nothing. A passkey's record is
//! stored again after each use (its signature counter).

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    CreationChallengeResponse, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, RequestChallengeResponse, Url, Uuid,
    Webauthn, WebauthnBuilder,
};

use super::{checked_name, token, Accounts, SignedIn};
use crate::error::AppError;
use crate::server::store::{AccountRow, Credential, PasskeyRow};

pub const REGISTER: &str = "passkey_register";
pub const SIGN_IN: &str = "passkey_sign_in";
/// Most passkeys one account holds.
pub const MAX_PER_ACCOUNT: usize = 20;

/// A registration in progress.
#[derive(Serialize, Deserialize)]
struct Registering {
    origin: String,
    state: PasskeyRegistration,
    purpose: Purpose,
}

#[derive(Serialize, Deserialize)]
enum Purpose {
    /// A new account through a setup or invite link.
    Join { link: String, name: String },
    /// One more passkey for an account.
    Add { account: i64 },
}

/// A sign-in in progress.
#[derive(Serialize, Deserialize)]
struct SigningIn {
    origin: String,
    account: i64,
    state: PasskeyAuthentication,
}

/// What a finished registration did.
pub enum Registered {
    Joined(SignedIn),
    Added,
}

/// The relying party for `origin` (`http(s)://host[:port]`).
fn relying_party(origin: &str) -> Result<Webauthn, AppError> {
    let url =
        Url::parse(origin).map_err(|_| AppError::Invalid("This address is not a URL.".into()))?;
    let Some(host) = url.domain() else {
        return Err(AppError::Invalid(
            "Passkeys need a host name: an IP address cannot be a relying party. Open this app \
             at localhost or at its domain name."
                .into(),
        ));
    };
    WebauthnBuilder::new(host, &url)
        .and_then(|b| b.rp_name("streamchat").build())
        .map_err(|e| AppError::Invalid(format!("Passkeys cannot be used at {host}: {e}.")))
}

fn refused(e: impl std::fmt::Display) -> AppError {
    tracing::info!(error = %e, "a passkey was refused");
    AppError::Unauthorized("The passkey was not accepted; try again.".into())
}

fn gone() -> AppError {
    AppError::Invalid("This passkey step was used already or took too long; start again.".into())
}

fn credential_id(passkey: &Passkey) -> String {
    URL_SAFE_NO_PAD.encode(passkey.cred_id().as_ref())
}

fn record(passkey: &Passkey) -> Result<String, AppError> {
    serde_json::to_string(passkey)
        .map_err(|e| AppError::internal(format!("a passkey's record: {e}")))
}

impl Accounts {
    /// Starts making an account with a passkey through a setup or invite
    /// link (the link is used only when the passkey is made).
    pub async fn passkey_join_start(
        &self,
        origin: &str,
        link: &str,
        name: &str,
        client: &str,
    ) -> Result<(String, CreationChallengeResponse), AppError> {
        let name = checked_name(name)?;
        if !token::plausible(link) {
            return Err(super::expired_link());
        }
        if self.store.account_named(name).await?.is_some() {
            return Err(super::name_taken(name));
        }
        let webauthn = relying_party(origin)?;
        let (options, state) = webauthn
            .start_passkey_registration(Uuid::new_v4(), name, name, None)
            .map_err(|e| AppError::internal(format!("passkey registration: {e}")))?;
        let registering = Registering {
            origin: origin.to_owned(),
            state,
            purpose: Purpose::Join {
                link: link.to_owned(),
                name: name.to_owned(),
            },
        };
        let ceremony = self.start_challenge(REGISTER, &registering, client).await?;
        Ok((ceremony, options))
    }

    /// Starts adding a passkey to a signed-in account.
    pub async fn passkey_add_start(
        &self,
        origin: &str,
        account: &AccountRow,
        client: &str,
    ) -> Result<(String, CreationChallengeResponse), AppError> {
        let held = self.passkeys(account.id).await?;
        if held.len() >= MAX_PER_ACCOUNT {
            return Err(AppError::Conflict(format!(
                "An account holds at most {MAX_PER_ACCOUNT} passkeys."
            )));
        }
        let webauthn = relying_party(origin)?;
        let exclude = held.iter().map(|p| p.cred_id().clone()).collect();
        let user = Uuid::from_u64_pair(0x7374_7265_616d_6368, account.id as u64);
        let (options, state) = webauthn
            .start_passkey_registration(user, &account.name, &account.name, Some(exclude))
            .map_err(|e| AppError::internal(format!("passkey registration: {e}")))?;
        let registering = Registering {
            origin: origin.to_owned(),
            state,
            purpose: Purpose::Add {
                account: account.id,
            },
        };
        let ceremony = self.start_challenge(REGISTER, &registering, client).await?;
        Ok((ceremony, options))
    }

    /// Ends a registration: the browser's new credential, checked against
    /// the ceremony's challenge and origin. `signed_in` is the account of
    /// the request (an added passkey must be for it).
    pub async fn passkey_register_finish(
        &self,
        origin: &str,
        ceremony: &str,
        credential: &RegisterPublicKeyCredential,
        signed_in: Option<&AccountRow>,
    ) -> Result<Registered, AppError> {
        let registering: Registering = self
            .take_challenge(REGISTER, ceremony)
            .await?
            .ok_or_else(gone)?;
        if registering.origin != origin {
            return Err(gone());
        }
        let passkey = relying_party(origin)?
            .finish_passkey_registration(credential, &registering.state)
            .map_err(refused)?;
        let (id, stored) = (credential_id(&passkey), record(&passkey)?);
        match registering.purpose {
            Purpose::Join { link, name } => {
                let credential = Credential::Passkey {
                    id: &id,
                    passkey: &stored,
                };
                let joined = self
                    .make_account(Some(&link), "member", &name, credential)
                    .await?;
                Ok(Registered::Joined(joined))
            }
            Purpose::Add { account } => {
                if signed_in.map(|a| a.id) != Some(account) {
                    return Err(gone());
                }
                if !self.store.insert_passkey(account, &id, &stored).await? {
                    return Err(AppError::Conflict("That passkey is already added.".into()));
                }
                tracing::info!(account, "passkey added");
                Ok(Registered::Added)
            }
        }
    }

    /// Starts signing in with a passkey of account `name`. Spends from the
    /// name's and the client's sign-in budgets, as a password attempt does.
    pub async fn passkey_sign_in_start(
        &self,
        origin: &str,
        name: &str,
        client: &str,
    ) -> Result<(String, RequestChallengeResponse), AppError> {
        let name = name.trim();
        let key = format!("name:{}", name.to_lowercase());
        self.per_account.take(&self.coordination, &key, 1).await?;
        let no_passkey = || {
            AppError::Unauthorized("No passkey is set up for that name; use its password.".into())
        };
        let account = self
            .store
            .account_named(name)
            .await?
            .ok_or_else(no_passkey)?;
        let held = self.passkeys(account.id).await?;
        if held.is_empty() {
            return Err(no_passkey());
        }
        let (options, state) = relying_party(origin)?
            .start_passkey_authentication(&held)
            .map_err(|e| AppError::internal(format!("passkey sign-in: {e}")))?;
        let signing_in = SigningIn {
            origin: origin.to_owned(),
            account: account.id,
            state,
        };
        let ceremony = self.start_challenge(SIGN_IN, &signing_in, client).await?;
        Ok((ceremony, options))
    }

    /// Ends a passkey sign-in: the assertion checked against the ceremony;
    /// a new session.
    pub async fn passkey_sign_in_finish(
        &self,
        origin: &str,
        ceremony: &str,
        assertion: &PublicKeyCredential,
    ) -> Result<SignedIn, AppError> {
        let signing_in: SigningIn = self
            .take_challenge(SIGN_IN, ceremony)
            .await?
            .ok_or_else(gone)?;
        if signing_in.origin != origin {
            return Err(gone());
        }
        let result = relying_party(origin)?
            .finish_passkey_authentication(assertion, &signing_in.state)
            .map_err(refused)?;
        for mut passkey in self.passkeys(signing_in.account).await? {
            if passkey.update_credential(&result).is_some() {
                self.store
                    .update_passkey(&credential_id(&passkey), &record(&passkey)?)
                    .await?;
            }
        }
        let account = self
            .store
            .account_by_id(signing_in.account)
            .await?
            .ok_or_else(gone)?;
        self.open_session(account).await
    }

    /// An account's passkeys as its page lists them.
    pub async fn passkey_list(&self, account: &AccountRow) -> Result<Vec<PasskeyRow>, AppError> {
        Ok(self.store.passkeys_of(account.id).await?)
    }

    /// Removes one of the account's passkeys; refused when it is the
    /// account's last way to sign in.
    pub async fn passkey_remove(
        &self,
        account: &AccountRow,
        credential_id: &str,
    ) -> Result<(), AppError> {
        match self.store.delete_passkey(account.id, credential_id).await? {
            Some(true) => {
                tracing::info!(account = account.id, "passkey removed");
                Ok(())
            }
            Some(false) => Err(AppError::NotFound("There is no such passkey.".into())),
            None => Err(AppError::Conflict(
                "That passkey is how this account signs in: add another passkey or link a \
                 provider before removing it."
                    .into(),
            )),
        }
    }

    async fn passkeys(&self, account: i64) -> Result<Vec<Passkey>, AppError> {
        self.store
            .passkeys_of(account)
            .await?
            .into_iter()
            .map(|row| {
                serde_json::from_str(&row.passkey)
                    .map_err(|e| AppError::internal(format!("a stored passkey: {e}")))
            })
            .collect()
    }
}
