-- A reasoning model's thinking, and full-text search.
--
-- Thinking is the reply's second part: streamed into reply_log with
-- `part = 1` (its own byte offsets) and, like the body, written into its
-- column once when the reply ends. `thinking_ms` is how long the model
-- thought (first thinking to the answer's start); `reasoning_tokens` the
-- provider's count of them, when it reports one.
ALTER TABLE messages ADD COLUMN thinking TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN thinking_ms INTEGER;
ALTER TABLE messages ADD COLUMN reasoning_tokens INTEGER;

-- Search: an FTS5 index over message bodies, with `messages` as its
-- external content (the text is not stored twice). A message is indexed
-- when its text is final: a user's when posted, a reply when it ends.
-- Continue puts an ended reply back to streaming: it leaves the index
-- until it ends again. Thinking is not indexed.
CREATE VIRTUAL TABLE messages_fts USING fts5(body, content = 'messages', content_rowid = 'id');

CREATE TRIGGER messages_fts_posted AFTER INSERT ON messages
WHEN new.status <> 'streaming' BEGIN
    INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body);
END;

CREATE TRIGGER messages_fts_ended AFTER UPDATE OF status ON messages
WHEN old.status = 'streaming' AND new.status <> 'streaming' BEGIN
    INSERT INTO messages_fts (rowid, body) VALUES (new.id, new.body);
END;

CREATE TRIGGER messages_fts_reopened AFTER UPDATE OF status ON messages
WHEN old.status <> 'streaming' AND new.status = 'streaming' BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;

CREATE TRIGGER messages_fts_deleted AFTER DELETE ON messages
WHEN old.status <> 'streaming' BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, body) VALUES ('delete', old.id, old.body);
END;

INSERT INTO messages_fts (rowid, body) SELECT id, body FROM messages WHERE status <> 'streaming';
