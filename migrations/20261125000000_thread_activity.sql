-- Threads listed by last activity, with a live marker on those that have a
-- reply streaming.

-- Unix epoch ms of the thread's newest message (its creation when empty);
-- the writer moves it forward with every message it inserts.
ALTER TABLE threads ADD COLUMN last_activity_at INTEGER NOT NULL DEFAULT 0;
UPDATE threads SET last_activity_at = COALESCE(
    (SELECT MAX(created_at) FROM messages WHERE messages.thread_id = threads.id),
    created_at
);

-- The home page: threads by last activity, newest first.
CREATE INDEX idx_threads_activity ON threads (last_activity_at DESC, id);
-- The live marker: a thread's replies still streaming, without scanning its history.
CREATE INDEX idx_messages_live ON messages (thread_id) WHERE status = 'streaming';
