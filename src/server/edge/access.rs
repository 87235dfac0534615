//! Who a request comes from: the name a post is stored under and the key
//! the `@gpt` limit counts by. Both come from what a trusted proxy says when
//! one is configured ([`AccessConfig`]), never from a name the client picks
//! freely.

use std::net::SocketAddr;

use axum::{
    extract::{connect_info::Connected, ConnectInfo},
    http::request::Parts,
    serve::IncomingStream,
};

use crate::error::AppError;
use crate::server::config::AccessConfig;

/// The address a connection comes from, put on every request it carries.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, super::sse_listener::SseListener>> for ClientAddr {
    fn connect_info(stream: IncomingStream<'_, super::sse_listener::SseListener>) -> Self {
        ClientAddr(*stream.remote_addr())
    }
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requester {
    /// The proxy's identity, when one is configured: it replaces any name
    /// the request carries.
    pub identity: Option<String>,
    /// What limits count by: the identity, or the client's address.
    pub client: String,
}

impl Requester {
    /// The name to store: the proxy's identity, else what the client typed.
    pub fn name_or<'a>(&'a self, typed: &'a str) -> &'a str {
        self.identity.as_deref().unwrap_or(typed)
    }
}

/// Reads the requester from a request's head. With an identity header
/// configured, a request without it is refused.
pub fn requester(config: &AccessConfig, parts: &Parts) -> Result<Requester, AppError> {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let identity = match &config.identity_header {
        Some(name) => Some(header(name).map(str::to_owned).ok_or_else(|| {
            AppError::Unauthorized(
                "Sign in first: this app takes its users' names from the sign-in service.".into(),
            )
        })?),
        None => None,
    };
    let client = match &identity {
        Some(user) => format!("user:{user}"),
        None => config
            .client_ip_header
            .as_deref()
            .and_then(header)
            .and_then(|v| v.rsplit(',').next())
            .map(|ip| format!("ip:{}", ip.trim()))
            .or_else(|| {
                parts
                    .extensions
                    .get::<ConnectInfo<ClientAddr>>()
                    .map(|ConnectInfo(ClientAddr(addr))| format!("ip:{}", addr.ip()))
            })
            .unwrap_or_else(|| "ip:unknown".into()),
    };
    Ok(Requester { identity, client })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(headers: &[(&str, &str)], peer: Option<&str>) -> Parts {
        let mut request = Request::builder();
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let mut request = request.body(()).unwrap();
        if let Some(peer) = peer {
            request
                .extensions_mut()
                .insert(ConnectInfo(ClientAddr(peer.parse().unwrap())));
        }
        request.into_parts().0
    }

    #[test]
    fn the_connection_address_by_default_and_names_are_the_clients() {
        let config = AccessConfig::default();
        let who = requester(
            &config,
            &parts(&[("x-forwarded-for", "1.2.3.4")], Some("10.0.0.7:5555")),
        )
        .unwrap();
        assert_eq!(who.client, "ip:10.0.0.7", "an untrusted header is ignored");
        assert_eq!(who.name_or("Ann"), "Ann");
    }

    #[test]
    fn a_trusted_proxy_decides_the_address_and_the_name() {
        let config = AccessConfig {
            identity_header: None,
            client_ip_header: Some("X-Forwarded-For".into()),
        };
        let who = requester(
            &config,
            &parts(
                &[("x-forwarded-for", "6.6.6.6, 1.2.3.4")],
                Some("10.0.0.7:5555"),
            ),
        )
        .unwrap();
        assert_eq!(who.client, "ip:1.2.3.4", "the entry the proxy added");

        let config = AccessConfig {
            identity_header: Some("X-Forwarded-User".into()),
            client_ip_header: None,
        };
        let who = requester(
            &config,
            &parts(&[("x-forwarded-user", "ann@example.com")], None),
        )
        .unwrap();
        assert_eq!(who.name_or("Mallory"), "ann@example.com");
        assert_eq!(who.client, "user:ann@example.com");
        assert!(matches!(
            requester(&config, &parts(&[], None)),
            Err(AppError::Unauthorized(_))
        ));
    }
}
