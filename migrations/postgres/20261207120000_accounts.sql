-- Built-in accounts (access.mode = "accounts"): people, their sign-in
-- sessions, and the links that let someone make an account.

-- A person. `name` is what others see as the author of their posts; it is
-- unique whatever its letter case. `password_hash` is an argon2id PHC
-- string (NULL: no password; another sign-in method). A disabled account
-- cannot sign in and its sessions are refused.
CREATE TABLE accounts (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT    NOT NULL,
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'member')),
    password_hash TEXT,
    disabled      BIGINT  NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    BIGINT  NOT NULL
);
CREATE UNIQUE INDEX idx_accounts_name ON accounts (lower(name));

-- A signed-in browser. The cookie carries a random token; only its
-- SHA-256 (hex) is stored, so a copy of the database signs no one in.
-- Refused after `session_idle_hours` without use or `session_max_days`
-- after sign-in; expired rows are deleted.
CREATE TABLE sessions (
    token_hash   TEXT    PRIMARY KEY,
    account_id   BIGINT  NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at   BIGINT  NOT NULL,
    last_seen_at BIGINT  NOT NULL
);
CREATE INDEX idx_sessions_account ON sessions (account_id);

-- A link that makes accounts: `setup` makes the first admin (valid only
-- while there is no account), `invite` makes `role` accounts until its
-- uses run out or it expires. Stored as the token's SHA-256, like sessions.
CREATE TABLE join_links (
    token_hash TEXT    PRIMARY KEY,
    kind       TEXT    NOT NULL CHECK (kind IN ('setup', 'invite')),
    role       TEXT    NOT NULL CHECK (role IN ('admin', 'member')),
    uses_left  BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    created_by BIGINT  REFERENCES accounts (id) ON DELETE SET NULL
);
