//! Secret tokens (session cookies, setup and invite links): 32 random
//! bytes from the operating system, written base64url; stored only as
//! their SHA-256, so the database alone lets no one in.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use sha2::{Digest, Sha256};

/// The longest token text looked up (a real one is 43 characters); longer
/// input is refused before hashing.
pub const MAX_TOKEN_CHARS: usize = 64;

/// A new random token.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random numbers");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What is stored for `token`: its SHA-256 in hex.
pub fn token_hash(token: &str) -> String {
    use std::fmt::Write;
    Sha256::digest(token.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// Whether `text` could be a token at all (base64url, not too long).
pub fn plausible(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_TOKEN_CHARS
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_and_hash_to_64_hex_digits() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(plausible(&a));
        let hash = token_hash(&a);
        assert_eq!(hash.len(), 64);
        assert!(hash.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(hash, token_hash(&b));
        // SHA-256 of "abc", a published test vector.
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn implausible_tokens_are_refused_before_lookup() {
        assert!(!plausible(""));
        assert!(!plausible("a b"));
        assert!(!plausible("x".repeat(65).as_str()));
        assert!(!plausible("abc;def"));
    }
}
