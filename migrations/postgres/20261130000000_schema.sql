-- The PostgreSQL schema: the same threads, messages and append-only reply
-- log as the SQLite migrations one folder up arrive at, plus what several
-- instances on one database need (per-thread revisions, reply leases, the
-- shared @gpt limit). Times the app writes are Unix epoch milliseconds;
-- lease expiry uses the database's clock, so instances' clocks never
-- disagree about it.

CREATE TABLE threads (
    id                TEXT PRIMARY KEY,
    title             TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    granularity       TEXT CHECK (granularity IS NULL OR granularity IN ('token', 'word', 'sentence')),
    last_activity_at  BIGINT NOT NULL DEFAULT 0,
    listed            BOOLEAN NOT NULL DEFAULT TRUE,
    -- The thread's last revision. Every committing transaction locks this
    -- row (FOR UPDATE), stamps its changes with the next revisions and
    -- stores the last: a thread's revisions are in commit order across
    -- instances, so a viewer resuming from R never misses a later commit
    -- with a revision below R.
    rev               BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX idx_threads_activity ON threads (listed, last_activity_at DESC, id);

CREATE TABLE messages (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    thread_id          TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
    author             TEXT NOT NULL,
    role               TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    -- Written when the message is created and, for a reply, once when it
    -- ends (the streamed text is in reply_log until then).
    body               TEXT NOT NULL DEFAULT '',
    status             TEXT NOT NULL,
    error              TEXT,
    finish_reason      TEXT,
    model              TEXT,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    finished_at        BIGINT,
    prompt_tokens      BIGINT,
    completion_tokens  BIGINT,
    -- The thread revision of this row's last visible change.
    rev                BIGINT NOT NULL DEFAULT 0,
    requested_by       TEXT,
    context_before     BIGINT,
    stopped_by         TEXT,
    notice             TEXT,
    retries            BIGINT NOT NULL DEFAULT 0,
    usage_estimated    BOOLEAN NOT NULL DEFAULT FALSE,
    ttft_ms            BIGINT,
    tokens_per_second  DOUBLE PRECISION,
    request_id         TEXT,
    reply_to           BIGINT,
    -- The lease of the one instance producing a streaming reply: who, a
    -- fencing epoch raised on every takeover, and until when (renewed by
    -- the producer's commits). A write whose epoch is not the row's is
    -- refused.
    lease_owner        TEXT,
    lease_epoch        BIGINT NOT NULL DEFAULT 0,
    lease_expires_at   TIMESTAMPTZ,
    -- How many times another instance adopted this reply after its
    -- producer died.
    resumed            INTEGER NOT NULL DEFAULT 0,
    -- Stop pressed while no instance was producing the reply: the adopter
    -- ends it `cancelled` instead of continuing it.
    stop_requested_by  TEXT
);

CREATE INDEX idx_messages_thread_id ON messages (thread_id, id);
CREATE INDEX idx_messages_thread_rev ON messages (thread_id, rev);
CREATE INDEX idx_messages_live ON messages (thread_id) WHERE status = 'streaming';
-- Adoption: streaming replies by lease expiry.
CREATE INDEX idx_messages_leases ON messages (lease_expires_at) WHERE status = 'streaming';
CREATE INDEX idx_messages_requested_by ON messages (requested_by) WHERE requested_by IS NOT NULL;
CREATE UNIQUE INDEX idx_messages_request ON messages (thread_id, request_id) WHERE request_id IS NOT NULL;
CREATE INDEX idx_messages_reply_to ON messages (reply_to) WHERE reply_to IS NOT NULL;

-- The append-only log of streamed text: one row per reply per commit,
-- deleted once the reply's text is written into its body. `thread_id`
-- and the (thread_id, rev) index let an instance woken by a NOTIFY read a
-- thread's new rows after the revision it delivered, whatever the reply.
CREATE TABLE reply_log (
    message_id  BIGINT NOT NULL,
    seq         INTEGER NOT NULL,
    thread_id   TEXT NOT NULL,
    part        SMALLINT NOT NULL DEFAULT 0,
    "offset"    BIGINT NOT NULL,
    rev         BIGINT NOT NULL,
    text        TEXT NOT NULL,
    PRIMARY KEY (message_id, seq)
);
CREATE INDEX idx_reply_log_thread_rev ON reply_log (thread_id, rev);

-- The @gpt limit shared by every instance: a GCRA "theoretical arrival
-- time" per client key (one row per client, updated in one statement).
CREATE TABLE mention_limits (
    key  TEXT PRIMARY KEY,
    tat  TIMESTAMPTZ NOT NULL
);

INSERT INTO threads (id, title, created_at, last_activity_at)
VALUES ('lobby', 'Lobby', (extract(epoch FROM now()) * 1000)::BIGINT, (extract(epoch FROM now()) * 1000)::BIGINT);
