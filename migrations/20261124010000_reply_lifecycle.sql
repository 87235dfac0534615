-- The reply lifecycle: who asked and who stopped, what the prompt was,
-- retries, usage estimates and speed, and a per-thread granularity.

-- The author whose mention (or Regenerate / Continue) started the reply.
ALTER TABLE messages ADD COLUMN requested_by TEXT;
-- The reply's prompt is the thread's messages with id < context_before
-- (its own id for a first answer; the original's for a regenerated one).
ALTER TABLE messages ADD COLUMN context_before INTEGER;
-- Who pressed Stop (status 'cancelled').
ALTER TABLE messages ADD COLUMN stopped_by TEXT;
-- A passing note while streaming, e.g. "Retrying in 2 s (attempt 2 of 4)".
ALTER TABLE messages ADD COLUMN notice TEXT;
-- Provider attempts that were retried (429 / 5xx before the first token).
ALTER TABLE messages ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
-- 1 when the token counts are our tokenizer's estimate, not the provider's.
ALTER TABLE messages ADD COLUMN usage_estimated INTEGER NOT NULL DEFAULT 0;
-- Time from the provider request to the first text, and generation speed.
ALTER TABLE messages ADD COLUMN ttft_ms INTEGER;
ALTER TABLE messages ADD COLUMN tokens_per_second REAL;

-- Overrides the configured stream granularity ('token', 'word', 'sentence').
ALTER TABLE threads ADD COLUMN granularity TEXT
    CHECK (granularity IS NULL OR granularity IN ('token', 'word', 'sentence'));

-- Per-author usage totals.
CREATE INDEX idx_messages_requested_by ON messages (requested_by) WHERE requested_by IS NOT NULL;
