-- The append-only log of streamed reply text.
--
-- While a reply streams, each group commit INSERTs one small row per reply
-- here instead of rewriting the message's body (`body = body || ?` made
-- SQLite rewrite the whole row and its overflow pages on every commit:
-- O(n^2) bytes per reply). A streaming reply's text is its `body` (what it
-- held when it started: empty, or the text a Continue keeps) followed by
-- its log rows in `seq` order. When the reply ends, the log is written into
-- `body` once and its rows are deleted (start-up recovery does the same for
-- replies a crash left streaming).
--
-- `key` packs (message id << 32 | seq) into the rowid: one B-tree, a
-- reply's rows adjacent and in order, and an append touches one leaf page.
-- `offset` is the byte offset of `text` in the reply's text (the delta's
-- offset); `rev` the revision its commit stamped (a reconnecting viewer's
-- snapshot includes a reply whose log moved past its revision). `part` is
-- 0 for the answer (a later part, such as a model's reasoning, has its own).
CREATE TABLE reply_log (
    key INTEGER PRIMARY KEY,
    part INTEGER NOT NULL DEFAULT 0,
    offset INTEGER NOT NULL,
    rev INTEGER NOT NULL,
    text TEXT NOT NULL
);

-- Replies streaming when this migration runs keep their text in `body`
-- (the log starts empty for them): nothing to move.
