-- Tool calls.
--
-- A reply's tool calls are its third part: a log of records (one JSON
-- object per line: a call begins, its arguments in fragments, its state
-- changes and result), streamed into reply_log with `part = 2` and, like
-- the body and the thinking, written into its column once when the reply
-- ends.
ALTER TABLE messages ADD COLUMN tools TEXT NOT NULL DEFAULT '';

-- Decisions on calls that wait for approval: who decided, and on which
-- exact arguments (the hash of the arguments shown to them). Written by
-- the instance where someone pressed Approve or Deny; the reply's producer
-- reads it and records the outcome in the reply's tool log. One decision
-- per round of waiting (a call asked again after a restart waits a second
-- round); the first decision of a round stands (primary key).
CREATE TABLE tool_decisions (
    message_id     BIGINT  NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    call_index     INTEGER NOT NULL,
    round          INTEGER NOT NULL,
    arguments_hash TEXT NOT NULL,
    approved       BOOLEAN NOT NULL,
    decided_by     TEXT NOT NULL,
    decided_at     BIGINT  NOT NULL,
    PRIMARY KEY (message_id, call_index, round)
);
