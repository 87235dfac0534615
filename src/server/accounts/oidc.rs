//! Sign in with OpenID Connect (`[[access.oidc]]`), through the
//! `openidconnect` crate: discovery, the authorization code flow with PKCE,
//! a nonce and a state, and the ID token's checks (signature against the
//! provider's keys, issuer, audience, expiry, nonce).
//!
//! An account is linked to an identity by issuer + subject, never by e-mail
//! address. Signing in with an identity no account has makes one only when
//! the provider's join rule allows it (a verified e-mail address in
//! `allowed_domains`, or `allowed_group` in the groups claim); a signed-in
//! person links an identity to their account from their account page.
//!
//! The state is a random token stored hashed ([`super::challenges`]) with
//! the nonce, the PKCE verifier and where to go after; the browser holds it
//! in a cookie too, so a callback carrying someone else's state is refused
//! (login CSRF), and taking it once refuses a replay. The provider's
//! answers are read through our reqwest (no redirects followed, bodies
//! capped at [`MAX_BODY_BYTES`]).

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use openidconnect::{
    core::{CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreProviderMetadata},
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{Accounts, SignedIn};
use crate::error::AppError;
use crate::server::{config::OidcProviderConfig, store::AccountRow, store::Credential};

/// Largest answer read from a provider (discovery, keys, tokens).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// How long a provider's discovery document and keys are kept.
const DISCOVERY_TTL: Duration = Duration::from_secs(600);
/// How long one request to a provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
pub const CHALLENGE_KIND: &str = "oidc";

/// The providers and the HTTP client that reaches them.
pub struct Oidc {
    providers: Vec<Provider>,
    http: ProviderHttp,
}

/// Our reqwest as `openidconnect`'s HTTP client: no redirects followed,
/// each answer capped at [`MAX_BODY_BYTES`].
struct ProviderHttp(reqwest::Client);

impl<'c> openidconnect::AsyncHttpClient<'c> for ProviderHttp {
    type Error = HttpError;
    type Future = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<openidconnect::HttpResponse, HttpError>>
                + Send
                + 'c,
        >,
    >;

    fn call(&'c self, request: openidconnect::HttpRequest) -> Self::Future {
        Box::pin(send(&self.0, request))
    }
}

struct Provider {
    config: OidcProviderConfig,
    secret: Option<String>,
    /// Discovery's answer, and when it was read.
    metadata: Mutex<Option<(CoreProviderMetadata, Instant)>>,
}

/// A flow in progress, as stored under its state.
#[derive(Serialize, Deserialize)]
struct Pending {
    provider: String,
    nonce: String,
    verifier: String,
    redirect: String,
    next: String,
    /// Linking this account, not signing in.
    link: Option<i64>,
}

/// Where to send the browser, and the state it must bring back.
pub struct Started {
    pub url: String,
    pub state: String,
}

/// What a callback did.
pub enum Finished {
    SignedIn {
        signed_in: SignedIn,
        next: String,
    },
    /// The identity is now this account's (from the account page).
    Linked,
}

/// The person a verified ID token names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub preferred_name: Option<String>,
    pub groups: Vec<String>,
}

/// A provider's HTTP failure, in words (no URLs or secrets).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl Oidc {
    pub fn new(configs: &[OidcProviderConfig]) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .build()
            .expect("an HTTP client");
        let providers = configs
            .iter()
            .map(|config| Provider {
                secret: config.client_secret.as_ref().map(|s| s.0.clone()),
                config: config.clone(),
                metadata: Mutex::new(None),
            })
            .collect();
        Self {
            providers,
            http: ProviderHttp(http),
        }
    }

    /// The providers' ids and names, for the sign-in page's buttons.
    pub fn buttons(&self) -> Vec<(String, String)> {
        self.providers
            .iter()
            .map(|p| (p.config.id.clone(), p.config.name.clone()))
            .collect()
    }

    fn provider(&self, id: &str) -> Result<&Provider, AppError> {
        self.providers
            .iter()
            .find(|p| p.config.id == id)
            .ok_or_else(|| AppError::NotFound(format!("There is no sign-in provider \"{id}\".")))
    }

    /// The provider's discovery document and keys (kept [`DISCOVERY_TTL`]).
    async fn metadata(&self, provider: &Provider) -> Result<CoreProviderMetadata, AppError> {
        let mut cached = provider.metadata.lock().await;
        if let Some((metadata, read)) = cached.as_ref() {
            if read.elapsed() < DISCOVERY_TTL {
                return Ok(metadata.clone());
            }
        }
        let issuer = IssuerUrl::new(provider.config.issuer.clone())
            .map_err(|e| AppError::internal(format!("oidc {}: issuer: {e}", provider.config.id)))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| {
                tracing::warn!(provider = %provider.config.id, error = %crate::error::causes(&e), "OpenID Connect discovery failed");
                unavailable(&provider.config.name)
            })?;
        *cached = Some((metadata.clone(), Instant::now()));
        Ok(metadata)
    }

    async fn client(
        &self,
        provider: &Provider,
        redirect: &str,
    ) -> Result<ProviderClient, AppError> {
        let metadata = self.metadata(provider).await?;
        let redirect = RedirectUrl::new(redirect.to_owned())
            .map_err(|e| AppError::internal(format!("oidc redirect URL: {e}")))?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(provider.config.client_id.clone()),
            provider.secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }
}

/// One request to a provider through our client.
async fn send(
    http: &reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, HttpError> {
    let (parts, body) = request.into_parts();
    let mut response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(|e| HttpError(format!("the provider did not answer ({})", kind_of(&e))))?;
    let mut read = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| HttpError(format!("the provider's answer broke off ({})", kind_of(&e))))?
    {
        if read.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(HttpError(format!(
                "the provider's answer is over {MAX_BODY_BYTES} bytes"
            )));
        }
        read.extend_from_slice(&chunk);
    }
    let mut out = openidconnect::HttpResponse::new(read);
    *out.status_mut() = response.status();
    *out.headers_mut() = response.headers().clone();
    Ok(out)
}

type ProviderClient = openidconnect::Client<
    openidconnect::EmptyAdditionalClaims,
    openidconnect::core::CoreAuthDisplay,
    openidconnect::core::CoreGenderClaim,
    openidconnect::core::CoreJweContentEncryptionAlgorithm,
    openidconnect::core::CoreJsonWebKey,
    openidconnect::core::CoreAuthPrompt,
    openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    openidconnect::core::CoreTokenResponse,
    openidconnect::core::CoreTokenIntrospectionResponse,
    openidconnect::core::CoreRevocableToken,
    openidconnect::core::CoreRevocationErrorResponse,
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

impl Accounts {
    pub fn oidc_buttons(&self) -> Vec<(String, String)> {
        self.oidc.buttons()
    }

    /// Starts signing in (or, with `link`, linking that account) with
    /// provider `id`; the browser is sent to the returned URL, holding the
    /// state in a cookie.
    pub async fn oidc_start(
        &self,
        id: &str,
        origin: &str,
        next: &str,
        link: Option<&AccountRow>,
        client: &str,
    ) -> Result<Started, AppError> {
        let provider = self.oidc.provider(id)?;
        let redirect = format!("{origin}/signin/oidc/{id}/callback");
        let oidc_client = self.oidc.client(provider, &redirect).await?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = Nonce::new_random();
        let pending = Pending {
            provider: id.to_owned(),
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
            redirect,
            next: next.to_owned(),
            link: link.map(|a| a.id),
        };
        let state = self
            .start_challenge(CHALLENGE_KIND, &pending, client)
            .await?;
        let returned_state = state.clone();
        let (url, _, _) = oidc_client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(returned_state.clone()),
                move || nonce.clone(),
            )
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        Ok(Started {
            url: url.to_string(),
            state,
        })
    }

    /// The provider's answer: `state` as the callback carries it, `cookie`
    /// as this browser holds it, and the code.
    pub async fn oidc_finish(
        &self,
        id: &str,
        state: &str,
        cookie: Option<&str>,
        code: &str,
    ) -> Result<Finished, AppError> {
        let provider = self.oidc.provider(id)?;
        if cookie != Some(state) {
            return Err(not_started());
        }
        let pending: Pending = self
            .take_challenge(CHALLENGE_KIND, state)
            .await?
            .filter(|p: &Pending| p.provider == id)
            .ok_or_else(not_started)?;
        let oidc_client = self.oidc.client(provider, &pending.redirect).await?;
        let request = oidc_client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| AppError::internal(format!("oidc {id}: no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.verifier.clone()));
        let tokens = request.request_async(&self.oidc.http).await.map_err(|e| {
            tracing::warn!(provider = id, error = %crate::error::causes(&e), "OpenID Connect code exchange refused");
            AppError::Unauthorized(format!(
                "{} did not confirm this sign-in; start again.",
                provider.config.name
            ))
        })?;
        let id_token = tokens.id_token().ok_or_else(|| {
            AppError::Unauthorized(format!("{} sent no ID token.", provider.config.name))
        })?;
        let identity = verified(&oidc_client, &provider.config, id_token, &pending.nonce)?;
        self.oidc_account(provider, identity, pending).await
    }

    /// Checks an ID token as a callback would (signature, issuer, audience,
    /// expiry, nonce): the person it names.
    pub async fn oidc_verify(
        &self,
        id: &str,
        id_token: &str,
        nonce: &str,
    ) -> Result<Identity, AppError> {
        let provider = self.oidc.provider(id)?;
        let oidc_client = self.oidc.client(provider, "http://localhost/").await?;
        let token: CoreIdToken = id_token
            .parse()
            .map_err(|_| AppError::Unauthorized("That is not an ID token.".into()))?;
        verified(&oidc_client, &provider.config, &token, nonce)
    }

    /// The account for a verified identity: the linked one, a link made
    /// now, or a new one when the join rule allows.
    async fn oidc_account(
        &self,
        provider: &Provider,
        identity: Identity,
        pending: Pending,
    ) -> Result<Finished, AppError> {
        let name = &provider.config.name;
        let linked = self
            .store
            .oidc_account(&identity.issuer, &identity.subject)
            .await?;
        if let Some(account_id) = pending.link {
            return match linked {
                Some(account) if account.id == account_id => Ok(Finished::Linked),
                Some(_) => Err(AppError::Conflict(format!(
                    "That {name} sign-in belongs to another account here."
                ))),
                None => {
                    if !self
                        .store
                        .link_oidc(&identity.issuer, &identity.subject, account_id)
                        .await?
                    {
                        return Err(AppError::Conflict(format!(
                            "That {name} sign-in belongs to another account here."
                        )));
                    }
                    tracing::info!(account = account_id, provider = %provider.config.id, "OpenID Connect identity linked");
                    Ok(Finished::Linked)
                }
            };
        }
        let signed_in = match linked {
            Some(account) => self.open_session(account).await?,
            None if may_join(&provider.config, &identity) => self.oidc_join(&identity).await?,
            None => {
                return Err(AppError::Forbidden(format!(
                    "No account here is linked to that {name} sign-in, and it may not make one. \
                     Ask an admin for an invite, then link {name} from your account page."
                )))
            }
        };
        Ok(Finished::SignedIn {
            signed_in,
            next: pending.next,
        })
    }

    /// A new member account for an identity the join rule allows, named
    /// after it (a number added while the name is taken).
    async fn oidc_join(&self, identity: &Identity) -> Result<SignedIn, AppError> {
        let base = suggested_name(identity);
        let credential = Credential::Oidc {
            issuer: &identity.issuer,
            subject: &identity.subject,
        };
        for n in 1..=20 {
            let name = if n == 1 {
                base.clone()
            } else {
                format!("{base} {n}")
            };
            match self.make_account(None, "member", &name, credential).await {
                Err(AppError::Conflict(_)) => continue,
                made => return made,
            }
        }
        Err(AppError::Conflict(
            "Every name this sign-in suggests is taken; ask an admin for an invite.".into(),
        ))
    }
}

/// The ID token's claims, checked; what they say about the person.
fn verified(
    client: &ProviderClient,
    config: &OidcProviderConfig,
    token: &CoreIdToken,
    nonce: &str,
) -> Result<Identity, AppError> {
    use openidconnect::ClaimsVerificationError as E;
    let claims = token
        .claims(&client.id_token_verifier(), &Nonce::new(nonce.to_owned()))
        .map_err(|e| {
            tracing::warn!(provider = %config.id, error = %e, "an ID token was refused");
            let why = match e {
                E::InvalidAudience(_) => "it was issued to another app",
                E::InvalidNonce(_) => "its nonce is not this sign-in's",
                E::InvalidIssuer(_) => "it is from another issuer",
                E::Expired(_) => "it has expired",
                E::SignatureVerification(_) => "its signature does not verify",
                _ => "it is not valid",
            };
            AppError::Unauthorized(format!("{}'s sign-in was refused: {why}.", config.name))
        })?;
    let groups = groups_claim(token, &config.groups_claim);
    Ok(Identity {
        issuer: claims.issuer().to_string(),
        subject: claims.subject().to_string(),
        email: claims.email().map(|e| e.to_string()),
        email_verified: claims.email_verified().unwrap_or(false),
        preferred_name: claims
            .preferred_username()
            .map(|n| n.to_string())
            .or_else(|| {
                claims
                    .name()
                    .and_then(|n| n.get(None))
                    .map(|n| n.to_string())
            }),
        groups,
    })
}

/// The groups an ID token's claim names (a list of strings, or one). Read
/// from the token already verified: its payload is the signed text.
fn groups_claim(token: &CoreIdToken, claim: &str) -> Vec<String> {
    use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
    let text = token.to_string();
    let payload = text.split('.').nth(1).unwrap_or_default();
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(payload) else {
        return Vec::new();
    };
    let Ok(claims) = serde_json::from_slice::<HashMap<String, serde_json::Value>>(&bytes) else {
        return Vec::new();
    };
    match claims.get(claim) {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .take(1000)
            .collect(),
        Some(serde_json::Value::String(one)) => vec![one.clone()],
        _ => Vec::new(),
    }
}

/// Whether a provider's join rule lets this identity make an account.
pub fn may_join(config: &OidcProviderConfig, identity: &Identity) -> bool {
    let domain_ok = identity.email_verified
        && identity
            .email
            .as_deref()
            .and_then(|e| e.rsplit_once('@'))
            .is_some_and(|(_, domain)| {
                config
                    .allowed_domains
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(domain))
            });
    let group_ok = config
        .allowed_group
        .as_ref()
        .is_some_and(|g| identity.groups.iter().any(|have| have == g));
    domain_ok || group_ok
}

/// A name for a new account: the provider's user name or name, else the
/// e-mail address's local part, cleaned and cut to fit.
fn suggested_name(identity: &Identity) -> String {
    let raw = identity
        .preferred_name
        .clone()
        .or_else(|| {
            identity
                .email
                .as_deref()
                .and_then(|e| e.split('@').next())
                .map(str::to_owned)
        })
        .unwrap_or_default();
    let cleaned: String = raw
        .chars()
        .filter(|c| !c.is_control())
        .take(super::MAX_NAME_CHARS - 3)
        .collect();
    let cleaned = cleaned.trim().to_owned();
    if cleaned.is_empty() {
        "member".to_owned()
    } else {
        cleaned
    }
}

fn not_started() -> AppError {
    AppError::Invalid(
        "This sign-in was not started in this browser, was used already, or took too long; \
         start again."
            .into(),
    )
}

fn unavailable(name: &str) -> AppError {
    AppError::Unavailable(format!("{name} cannot be reached now; try again later."))
}

fn kind_of(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "no connection"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(domains: &[&str], group: Option<&str>) -> OidcProviderConfig {
        OidcProviderConfig {
            id: "corp".into(),
            name: "Corp".into(),
            issuer: "https://id.example".into(),
            client_id: "chat".into(),
            client_secret_env: None,
            client_secret: None,
            allowed_domains: domains.iter().map(|d| d.to_string()).collect(),
            allowed_group: group.map(str::to_owned),
            groups_claim: "groups".into(),
        }
    }

    fn person(email: &str, verified: bool, groups: &[&str]) -> Identity {
        Identity {
            issuer: "https://id.example".into(),
            subject: "1".into(),
            email: Some(email.into()),
            email_verified: verified,
            preferred_name: None,
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn the_join_rule_needs_a_verified_domain_or_the_group() {
        let by_domain = provider(&["Example.com"], None);
        assert!(may_join(&by_domain, &person("ann@example.com", true, &[])));
        assert!(
            !may_join(&by_domain, &person("ann@example.com", false, &[])),
            "unverified"
        );
        assert!(!may_join(
            &by_domain,
            &person("ann@example.com.evil", true, &[])
        ));
        assert!(!may_join(
            &by_domain,
            &person("ann@evil.example.com", true, &[])
        ));
        let by_group = provider(&[], Some("chat"));
        assert!(may_join(
            &by_group,
            &person("x@y", false, &["staff", "chat"])
        ));
        assert!(!may_join(&by_group, &person("x@y", true, &["chatters"])));
        assert!(!may_join(
            &provider(&[], None),
            &person("ann@example.com", true, &["chat"])
        ));
    }

    #[test]
    fn suggested_names_fit_and_have_no_control_characters() {
        let mut who = person("ann.lee@example.com", true, &[]);
        assert_eq!(suggested_name(&who), "ann.lee");
        who.preferred_name = Some(format!("An\u{7}n {}", "x".repeat(200)));
        let name = suggested_name(&who);
        assert!(
            name.starts_with("Ann ") && name.chars().count() <= super::super::MAX_NAME_CHARS - 3
        );
    }
}
