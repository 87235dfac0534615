-- Sign-in methods besides a password: OpenID Connect identities, passkeys,
-- and the short-lived challenges their ceremonies need.

-- A sign-in in progress (an OpenID Connect redirect, a passkey ceremony).
-- Keyed by the SHA-256 of a random token the browser holds; `data` is the
-- ceremony's state (JSON). Taken once: a replayed state finds nothing.
-- Expired rows are deleted with expired sessions.
CREATE TABLE sign_in_challenges (
    token_hash TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('oidc', 'passkey_register', 'passkey_sign_in')),
    data       TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

-- An account's identity at an OpenID Connect provider: the provider's
-- issuer and its stable subject, never the e-mail address (which can change
-- hands).
CREATE TABLE oidc_identities (
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX idx_oidc_identities_account ON oidc_identities (account_id);

-- A passkey (WebAuthn credential) of an account; an account may hold
-- several. `passkey` is webauthn-rs's record (JSON: the public key and its
-- signature counter), updated after each use.
CREATE TABLE passkeys (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id    BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    credential_id TEXT NOT NULL UNIQUE,
    passkey       TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    last_used_at  BIGINT NOT NULL
);
CREATE INDEX idx_passkeys_account ON passkeys (account_id);
