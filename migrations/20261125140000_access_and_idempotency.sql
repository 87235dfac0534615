-- Who may read a thread, idempotent posts, and which post a reply answers.

-- 1: on the home page for everyone; 0: unlisted, reachable only through its
-- URL (never in a list, a live list event or search). Existing threads were
-- all on the home page, so they stay listed.
ALTER TABLE threads ADD COLUMN listed INTEGER NOT NULL DEFAULT 1 CHECK (listed IN (0, 1));

-- The id the composer sent with a post: a retried post (a network blip, a
-- double click, a form sent again) finds the first one instead of storing
-- a second message and starting a second reply.
ALTER TABLE messages ADD COLUMN request_id TEXT;
CREATE UNIQUE INDEX idx_messages_request ON messages (thread_id, request_id)
    WHERE request_id IS NOT NULL;

-- For a first answer: the user message it replies to (a retried post
-- returns the same replies).
ALTER TABLE messages ADD COLUMN reply_to INTEGER;
CREATE INDEX idx_messages_reply_to ON messages (reply_to) WHERE reply_to IS NOT NULL;

-- The thread list shows listed threads only, by last activity.
DROP INDEX IF EXISTS idx_threads_activity;
CREATE INDEX idx_threads_activity ON threads (listed, last_activity_at DESC, id);

-- The writer's health probe inserts a few pages here and rolls back: it
-- tells whether the database can grow again after writes were refused.
CREATE TABLE write_probe (data BLOB);

-- Room kept for recording how replies end when the database is full: the
-- writer deletes this 1 MiB row when a reply's end cannot be stored (its
-- pages become free for that), and puts it back once writes work again.
CREATE TABLE storage_reserve (id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL);
INSERT INTO storage_reserve (id, data) VALUES (1, zeroblob(1048576));
