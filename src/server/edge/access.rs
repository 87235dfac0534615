//! Who a request comes from, and whether it may come in at all: the `Host`
//! it names must be one this app serves (a page rebound by DNS to this
//! address names its own), and with an identity header configured every
//! route but the operator's needs one, believed only from a trusted proxy.
//! The client key every limit counts by comes from here too: the proxy's
//! identity, the address a trusted proxy reports, or the connection's
//! address (IPv6 by its /64), never a name the client picks freely.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{connect_info::Connected, ConnectInfo, Request, State},
    http::{header, request::Parts, HeaderName},
    middleware::Next,
    response::{IntoResponse, Response},
};
use ipnet::IpNet;

use crate::error::AppError;
use crate::server::accounts::Accounts;
use crate::server::config::{parse_cidr, AccessConfig};

/// The address a connection comes from, put on every request it carries.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

impl Connected<SocketAddr> for ClientAddr {
    fn connect_info(addr: SocketAddr) -> Self {
        ClientAddr(addr)
    }
}

/// Who is asking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requester {
    /// The proxy's identity, when one is configured: it replaces any name
    /// the request carries.
    pub identity: Option<String>,
    /// What limits count by: the account, the identity, or the client's
    /// address.
    pub client: String,
    /// Whether the browser reached us over HTTPS (a trusted proxy's
    /// `X-Forwarded-Proto: https`): session cookies are then `Secure`.
    pub https: bool,
}

impl Requester {
    /// The name to store: the proxy's identity, else what the client typed.
    pub fn name_or<'a>(&'a self, typed: &'a str) -> &'a str {
        self.identity.as_deref().unwrap_or(typed)
    }
}

/// The access rules, built once from [`AccessConfig`] and the address the
/// app listens on.
#[derive(Clone, Debug)]
pub struct Gate {
    identity_header: Option<HeaderName>,
    client_ip_header: Option<HeaderName>,
    proxies: Vec<IpNet>,
    /// Allowed hosts as `(name, port)`; no port: any port.
    hosts: Vec<(String, Option<u16>)>,
    /// Any IP-literal host is allowed (listening on every address with no
    /// host list; a DNS-rebound page never names an IP).
    any_ip_host: bool,
    operator_paths: Vec<String>,
}

impl Gate {
    pub fn new(config: &AccessConfig, listen: SocketAddr) -> Self {
        let mut hosts: Vec<(String, Option<u16>)> = config
            .allowed_hosts
            .iter()
            .filter_map(|h| {
                let h = h.to_ascii_lowercase();
                split_host(&h).map(|(name, port)| (name.to_owned(), port))
            })
            .collect();
        let defaults = config.allowed_hosts.is_empty();
        if defaults {
            for name in ["localhost", "127.0.0.1", "[::1]"] {
                hosts.push((name.into(), None));
            }
            if !listen.ip().is_unspecified() {
                hosts.push((host_of(listen.ip()), None));
            }
        }
        Self {
            identity_header: config
                .identity_header
                .as_deref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            client_ip_header: config
                .client_ip_header
                .as_deref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            proxies: config
                .trusted_proxies
                .iter()
                .filter_map(|c| parse_cidr(c))
                .collect(),
            hosts,
            any_ip_host: defaults && listen.ip().is_unspecified(),
            operator_paths: config.operator_paths.clone(),
        }
    }

    /// Whether `ip` is a trusted proxy's.
    pub fn is_proxy(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.proxies.iter().any(|net| net.contains(&ip))
    }

    /// Checks a request's head and says who sent it: 421 for a host this
    /// app does not serve, 401 without the identity a configured proxy must
    /// add (or with one from anywhere but that proxy).
    pub fn admit(&self, parts: &Parts) -> Result<Requester, AppError> {
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        if !self.serves_host(host) {
            return Err(AppError::Misdirected(format!(
                "This server does not serve the host \"{}\".",
                host.chars().take(100).collect::<String>()
            )));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<ClientAddr>>()
            .map(|ConnectInfo(ClientAddr(addr))| canonical(addr.ip()));
        let from_proxy = peer.is_some_and(|ip| self.is_proxy(ip));
        let header = |name: &HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let operator = self.operator_paths.iter().any(|p| p == parts.uri.path());
        let identity = match &self.identity_header {
            Some(name) if !operator => {
                // The proxy sets one identity; two lines mean one came from
                // the client past a proxy that appends instead of replacing.
                if parts.headers.get_all(name).iter().nth(1).is_some() {
                    return Err(AppError::Invalid(format!(
                        "The request carries the {name} header more than once; refused."
                    )));
                }
                let user = header(name).filter(|_| from_proxy).ok_or_else(|| {
                    AppError::Unauthorized(
                        "Sign in first: this app takes its users' names from the sign-in service."
                            .into(),
                    )
                })?;
                Some(user.to_owned())
            }
            _ => None,
        };
        let forwarded = self
            .client_ip_header
            .as_ref()
            .filter(|_| from_proxy)
            .and_then(|name| forwarded_client(name, &parts.headers));
        let client = match (&identity, forwarded.or(peer)) {
            (Some(user), _) => format!("user:{user}"),
            (None, Some(ip)) => client_key(ip),
            (None, None) => "ip:unknown".into(),
        };
        let https = from_proxy
            && header(&HeaderName::from_static("x-forwarded-proto"))
                .is_some_and(|proto| proto.eq_ignore_ascii_case("https"));
        Ok(Requester {
            identity,
            client,
            https,
        })
    }

    fn serves_host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let Some((name, port)) = split_host(&host) else {
            return false;
        };
        if self.any_ip_host
            && name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok()
        {
            return true;
        }
        self.hosts
            .iter()
            .any(|(allowed, want)| allowed == name && want.is_none_or(|w| Some(w) == port))
    }
}

/// The client address our proxy reports in header `name`: the last entry
/// of the last line (a proxy appends the address it saw, whether it merges
/// lines or adds its own; everything before it the client could write).
/// `Forwarded` (RFC 7239) is read by its last element's `for=`; others
/// (`X-Forwarded-For`, `X-Real-IP`) as a comma-separated list of addresses.
fn forwarded_client(name: &HeaderName, headers: &axum::http::HeaderMap) -> Option<IpAddr> {
    let last_line = headers.get_all(name).iter().next_back()?.to_str().ok()?;
    let last = last_line.rsplit(',').next()?.trim();
    if name == header::FORWARDED {
        let value = last.split(';').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            key.trim().eq_ignore_ascii_case("for").then(|| value.trim())
        })?;
        return address_of(value.trim_matches('"'));
    }
    address_of(last)
}

/// An address as proxies write it: `a.b.c.d`, `a.b.c.d:port`, an IPv6
/// address, or `[v6]` / `[v6]:port`.
fn address_of(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    text.parse::<SocketAddr>().ok().map(|a| a.ip()).or_else(|| {
        text.strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse().ok())
    })
}

/// `name[:port]` (an IPv6 literal in brackets) to its parts.
fn split_host(host: &str) -> Option<(&str, Option<u16>)> {
    let host = host.trim();
    if host.is_empty() {
        return None;
    }
    let (name, port) = match host.rfind(':') {
        Some(at)
            if !host.ends_with(']') && (host.starts_with('[') || !host[..at].contains(':')) =>
        {
            (&host[..at], Some(host[at + 1..].parse().ok()?))
        }
        _ => (host, None),
    };
    (!name.is_empty()).then_some((name, port))
}

fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// An IPv4 address arriving as IPv6 (`::ffff:a.b.c.d`) as the IPv4 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The key limits count an address by: an IPv4 address, or an IPv6
/// address's /64 (one home or host usually has a whole /64).
pub fn client_key(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => {
            let net = ipnet::Ipv6Net::new(v6, 64).map(|n| n.trunc());
            match net {
                Ok(net) => format!("ip:{net}"),
                Err(_) => format!("ip:{v6}"),
            }
        }
    }
}

/// The sign-in pages' paths (`account_pages.rs`), which need no session;
/// nor do the paths below `/signin/`, `/setup/` and `/join/` (OpenID
/// Connect, passkeys).
const SIGN_IN_PATHS: [&str; 4] = ["/signin", "/setup", "/join", "/signout"];

/// The door's state: the rules, and with built-in accounts, who a
/// session cookie belongs to.
#[derive(Clone)]
pub struct Door {
    pub gate: std::sync::Arc<Gate>,
    pub accounts: Option<Accounts>,
}

/// Middleware on every route: refuses what [`Gate::admit`] refuses before
/// any handler runs, and puts the [`Requester`] on the request. With
/// built-in accounts, a live session's account is the requester (and its
/// [`AccountRow`] rides along); without one, only the sign-in pages and
/// static files answer: a page asks the browser to sign in first, anything
/// else is 401.
pub async fn admit(State(door): State<Door>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    match door.admit(&mut parts).await {
        Ok(who) => {
            parts.extensions.insert(who);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(refusal) => refused(&parts, refusal),
    }
}

impl Door {
    async fn admit(&self, parts: &mut Parts) -> Result<Requester, AppError> {
        let mut who = self.gate.admit(parts)?;
        let Some(accounts) = &self.accounts else {
            return Ok(who);
        };
        // The sign-in pages and static files need no one: no session read
        // (a page load's script, style and icon cost no database reads).
        if self.is_public(parts.uri.path()) {
            return Ok(who);
        }
        if let Some(token) = crate::server::accounts::cookie::session_token(&parts.headers) {
            if let Some((account, session)) = accounts.session(&token).await? {
                who.identity = Some(account.name.clone());
                who.client = format!("account:{}", account.id);
                parts.extensions.insert(account);
                parts.extensions.insert(session);
                return Ok(who);
            }
        }
        Err(AppError::Unauthorized("Sign in first.".into()))
    }

    /// What answers without a session: the sign-in pages, static files,
    /// the operator's paths and the embedded demo model (the app calls it).
    fn is_public(&self, path: &str) -> bool {
        SIGN_IN_PATHS.contains(&path)
            || ["/signin/", "/setup/", "/join/"]
                .iter()
                .any(|p| path.starts_with(p))
            || path.starts_with("/pkg/")
            || path == "/favicon.svg"
            || path == "/passkeys.js"
            || path == "/v1/chat/completions"
            || self.gate.operator_paths.iter().any(|p| p == path)
    }
}

/// A refusal at the door. A page (a browser navigating) that needs a
/// session is sent to sign in, and comes back after.
fn refused(parts: &Parts, refusal: AppError) -> Response {
    let path = parts.uri.path();
    let navigating = parts.method == axum::http::Method::GET
        && parts
            .headers
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
    if matches!(refusal, AppError::Unauthorized(_)) && navigating && !path.starts_with("/api/") {
        let back = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let to = format!(
            "/signin?next={}",
            percent_encoding::utf8_percent_encode(back, percent_encoding::NON_ALPHANUMERIC)
        );
        if let Ok(location) = axum::http::HeaderValue::from_str(&to) {
            return (
                axum::http::StatusCode::SEE_OTHER,
                [(header::LOCATION, location)],
            )
                .into_response();
        }
    }
    tracing::info!(path, status = %refusal.status(), "request refused at the door");
    refusal.refusal(path)
}

/// Who sent a request the gate let in (in its extensions), or, for a
/// request that did not pass the gate (a test calling a handler directly),
/// what the gate says now.
pub fn requester(gate: &Gate, parts: &Parts) -> Result<Requester, AppError> {
    match parts.extensions.get::<Requester>() {
        Some(who) => Ok(who.clone()),
        None => gate.admit(parts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    fn parts(headers: &[(&str, &str)], peer: Option<&str>) -> Parts {
        let mut request = Request::builder().uri("/api/send_message");
        if !headers.iter().any(|(k, _)| *k == "host") {
            request = request.header("host", "127.0.0.1:3000");
        }
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
    fn the_proxys_address_is_the_last_one_written() {
        let read = |name: &'static str, lines: &[&'static str]| {
            let mut headers = axum::http::HeaderMap::new();
            for line in lines {
                headers.append(name, line.parse().unwrap());
            }
            forwarded_client(&HeaderName::from_static(name), &headers).map(|ip| ip.to_string())
        };
        let xff = "x-forwarded-for";
        assert_eq!(read(xff, &["1.1.1.1, 2.2.2.2"]).as_deref(), Some("2.2.2.2"));
        assert_eq!(
            read(xff, &["1.1.1.1", "2.2.2.2"]).as_deref(),
            Some("2.2.2.2")
        );
        assert_eq!(
            read(xff, &["9.9.9.9", " 2.2.2.2:80 "]).as_deref(),
            Some("2.2.2.2")
        );
        assert_eq!(
            read(xff, &["[2001:db8::1]:80"]).as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            read(xff, &["1.1.1.1", "junk"]),
            None,
            "never an earlier line"
        );
        let fwd = "forwarded";
        assert_eq!(
            read(
                fwd,
                &["for=1.1.1.1", "for=\"[2001:db8::1]:4711\";proto=https"]
            )
            .as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            read(fwd, &["for=1.1.1.1, By=10.0.0.1;For=\"2.2.2.2:8080\""]).as_deref(),
            Some("2.2.2.2")
        );
        assert_eq!(read(fwd, &["for=unknown"]), None);
        assert_eq!(read(fwd, &["proto=https"]), None);
    }

    #[test]
    fn a_repeated_identity_is_refused() {
        let g = gate(AccessConfig {
            identity_header: Some("X-Forwarded-User".into()),
            ..AccessConfig::default()
        });
        let one = g.admit(&parts(
            &[("x-forwarded-user", "ann")],
            Some("127.0.0.1:5555"),
        ));
        assert_eq!(one.unwrap().identity.as_deref(), Some("ann"));
        let two = g.admit(&parts(
            &[("x-forwarded-user", "mallory"), ("x-forwarded-user", "ann")],
            Some("127.0.0.1:5555"),
        ));
        assert!(matches!(two, Err(AppError::Invalid(_))), "{two:?}");
    }

    fn gate(config: AccessConfig) -> Gate {
        Gate::new(&config, "127.0.0.1:3000".parse().unwrap())
    }

    #[test]
    fn the_connection_address_by_default_and_names_are_the_clients() {
        let who = gate(AccessConfig::default())
            .admit(&parts(
                &[("x-forwarded-for", "1.2.3.4")],
                Some("10.0.0.7:5555"),
            ))
            .unwrap();
        assert_eq!(who.client, "ip:10.0.0.7", "an untrusted header is ignored");
        assert_eq!(who.name_or("Ann"), "Ann");
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let g = gate(AccessConfig::default());
        let a = g
            .admit(&parts(&[], Some("[2001:db8:1:2:aaaa::1]:5555")))
            .unwrap();
        let b = g
            .admit(&parts(&[], Some("[2001:db8:1:2:bbbb::9]:5555")))
            .unwrap();
        let other = g
            .admit(&parts(&[], Some("[2001:db8:1:3::1]:5555")))
            .unwrap();
        assert_eq!(a.client, "ip:2001:db8:1:2::/64");
        assert_eq!(a.client, b.client);
        assert_ne!(a.client, other.client);
        let mapped = g.admit(&parts(&[], Some("[::ffff:10.0.0.7]:1"))).unwrap();
        assert_eq!(mapped.client, "ip:10.0.0.7");
    }

    #[test]
    fn a_trusted_proxy_decides_the_address_and_the_name_only_from_its_address() {
        let g = gate(AccessConfig {
            client_ip_header: Some("X-Forwarded-For".into()),
            trusted_proxies: vec!["10.0.0.0/24".into()],
            ..AccessConfig::default()
        });
        let headers = [("x-forwarded-for", "6.6.6.6, 1.2.3.4")];
        let who = g.admit(&parts(&headers, Some("10.0.0.7:5555"))).unwrap();
        assert_eq!(who.client, "ip:1.2.3.4", "the entry the proxy added");
        let who = g.admit(&parts(&headers, Some("10.9.9.9:5555"))).unwrap();
        assert_eq!(
            who.client, "ip:10.9.9.9",
            "not from the proxy: not believed"
        );

        let g = gate(AccessConfig {
            identity_header: Some("X-Forwarded-User".into()),
            trusted_proxies: vec!["10.0.0.7".into()],
            ..AccessConfig::default()
        });
        let user = [("x-forwarded-user", "ann@example.com")];
        let who = g.admit(&parts(&user, Some("10.0.0.7:1"))).unwrap();
        assert_eq!(who.name_or("Mallory"), "ann@example.com");
        assert_eq!(who.client, "user:ann@example.com");
        assert!(matches!(
            g.admit(&parts(&[], Some("10.0.0.7:1"))),
            Err(AppError::Unauthorized(_))
        ));
        assert!(
            matches!(
                g.admit(&parts(&user, Some("10.0.0.8:1"))),
                Err(AppError::Unauthorized(_))
            ),
            "an identity from outside the proxy list is refused"
        );
    }

    #[test]
    fn only_the_hosts_served() {
        let g = gate(AccessConfig::default());
        for host in [
            "127.0.0.1:3000",
            "localhost:3000",
            "LOCALHOST",
            "[::1]:3000",
        ] {
            assert!(g.admit(&parts(&[("host", host)], None)).is_ok(), "{host}");
        }
        for host in ["evil.test:3000", "evil.test", "127.0.0.1.evil.test", ""] {
            assert!(
                matches!(
                    g.admit(&parts(&[("host", host)], None)),
                    Err(AppError::Misdirected(_))
                ),
                "{host}"
            );
        }
        let g = gate(AccessConfig {
            allowed_hosts: vec!["chat.example.com".into(), "alt.example:8443".into()],
            ..AccessConfig::default()
        });
        assert!(g
            .admit(&parts(&[("host", "chat.example.com:443")], None))
            .is_ok());
        assert!(g
            .admit(&parts(&[("host", "alt.example:8443")], None))
            .is_ok());
        assert!(g
            .admit(&parts(&[("host", "alt.example:80")], None))
            .is_err());
        assert!(
            g.admit(&parts(&[("host", "localhost")], None)).is_err(),
            "a host list replaces the defaults"
        );
        let any = Gate::new(&AccessConfig::default(), "0.0.0.0:3000".parse().unwrap());
        assert!(any
            .admit(&parts(&[("host", "192.168.1.20:3000")], None))
            .is_ok());
        assert!(any
            .admit(&parts(&[("host", "rebind.evil.test")], None))
            .is_err());
    }
}
