-- A reasoning model's thinking, and full-text search.
--
-- Thinking is the reply's second part: streamed into reply_log with
-- `part = 1` (its own byte offsets) and, like the body, written into its
-- column once when the reply ends. `thinking_ms` is how long the model
-- thought (first thinking to the answer's start); `reasoning_tokens` the
-- provider's count of them, when it reports one.
ALTER TABLE messages ADD COLUMN thinking TEXT NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN thinking_ms BIGINT;
ALTER TABLE messages ADD COLUMN reasoning_tokens BIGINT;

-- Search: a GIN index of the bodies' words ('simple': lower-cased words,
-- no stemming, like SQLite's unicode61) over messages whose text is final.
-- A streaming reply's body is written when it ends, so it enters the
-- index then; Continue (back to streaming) takes it out until it ends again.
CREATE INDEX idx_messages_search ON messages
    USING GIN (to_tsvector('simple', body)) WHERE status <> 'streaming';
