//! The session cookie (`HttpOnly`, `SameSite=Lax`, `Path=/`, `Secure` when
//! served over HTTPS) and the OpenID Connect state cookie (the same, on
//! `/signin/oidc` for ten minutes), read and written with the `cookie`
//! crate.

use axum::http::{header, HeaderMap, HeaderValue};
use cookie::{Cookie, SameSite};

/// The cookie's name.
pub const SESSION_COOKIE: &str = "streamchat_session";

/// The browser's half of an OpenID Connect flow: its state.
pub const OIDC_STATE_COOKIE: &str = "streamchat_oidc";

/// The session token a request carries, if any (the first of that name).
pub fn session_token(headers: &HeaderMap) -> Option<String> {
    named(headers, SESSION_COOKIE)
}

/// A cookie's value (the first of that name).
pub fn named(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|line| line.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

/// `Set-Cookie` for an OpenID Connect flow's state (`None` removes it).
pub fn set_oidc_state(state: Option<&str>, secure: bool) -> HeaderValue {
    let seconds = if state.is_some() { 600 } else { 0 };
    let cookie = Cookie::build((OIDC_STATE_COOKIE, state.unwrap_or("").to_owned()))
        .path("/signin/oidc")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(seconds));
    HeaderValue::from_str(&cookie.build().to_string()).expect("a cookie is a header value")
}

/// `Set-Cookie` for a new session (`max_age_secs`), or, with `None`, one
/// that removes the cookie.
pub fn set_session(token: Option<&str>, max_age_secs: u64, secure: bool) -> HeaderValue {
    let mut cookie = Cookie::build((SESSION_COOKIE, token.unwrap_or("").to_owned()))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure);
    cookie = match token {
        Some(_) => cookie.max_age(cookie::time::Duration::seconds(
            i64::try_from(max_age_secs).unwrap_or(i64::MAX),
        )),
        None => cookie.max_age(cookie::time::Duration::ZERO),
    };
    HeaderValue::from_str(&cookie.build().to_string()).expect("a cookie is a header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others_and_set_safely() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            "a=1; streamchat_session=abc_-9".parse().unwrap(),
        );
        headers.append(header::COOKIE, "streamchat_session=second".parse().unwrap());
        assert_eq!(session_token(&headers).as_deref(), Some("abc_-9"));
        assert_eq!(session_token(&HeaderMap::new()), None);

        let set = set_session(Some("tok"), 60, false);
        let set = set.to_str().unwrap();
        for part in [
            "streamchat_session=tok",
            "HttpOnly",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!set.contains("Secure"));
        assert!(set_session(Some("tok"), 60, true)
            .to_str()
            .unwrap()
            .contains("Secure"));
        assert!(set_session(None, 60, false)
            .to_str()
            .unwrap()
            .contains("Max-Age=0"));
    }
}
