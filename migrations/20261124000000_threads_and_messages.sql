-- Threads and their messages.
--
-- Times are Unix epoch milliseconds (UTC). `rev` is a global, strictly
-- increasing revision stamped by the single writer on every change of a row;
-- a subscriber that has seen revision N asks for "rows with rev > N" to
-- resume exactly (see src/server/sse.rs).

CREATE TABLE threads (
    id          TEXT PRIMARY KEY NOT NULL,
    title       TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE messages (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    thread_id          TEXT NOT NULL REFERENCES threads(id) ON DELETE CASCADE,
    author             TEXT NOT NULL,
    -- 'user' or 'assistant'
    role               TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
    -- Appended to while streaming (body = body || ?), never rewritten.
    body               TEXT NOT NULL DEFAULT '',
    -- 'done' for user messages; assistant replies start 'streaming' and end in
    -- 'done', 'failed', 'cancelled', 'timed_out' or 'interrupted'.
    status             TEXT NOT NULL,
    error              TEXT,
    finish_reason      TEXT,
    model              TEXT,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    finished_at        INTEGER,
    prompt_tokens      INTEGER,
    completion_tokens  INTEGER,
    rev                INTEGER NOT NULL DEFAULT 0
);

-- A thread's messages in creation order (ids grow with creation time).
CREATE INDEX idx_messages_thread_id ON messages (thread_id, id);
-- Resume: a thread's rows changed after a given revision.
CREATE INDEX idx_messages_thread_rev ON messages (thread_id, rev);
-- Start-up recovery: replies left streaming by a crash.
CREATE INDEX idx_messages_streaming ON messages (status) WHERE status = 'streaming';

-- The default thread, so the home page works at once.
INSERT INTO threads (id, title, created_at)
VALUES ('lobby', 'Lobby', CAST(strftime('%s', 'now') AS INTEGER) * 1000);
