-- Private threads (access.mode = "accounts" or "proxy"): a thread with
-- member rows is private. Only its members see it: everyone else gets the
-- same 404 as for an unknown thread, from every route. `member` is the
-- person's name as the access mode gives it (the account's name, or the
-- proxy's identity); `owner` marks the one who made it, who alone adds and
-- removes members and cannot be removed. Threads with no member rows
-- (listed ones, and those made unlisted before this) are as before.
CREATE TABLE thread_members (
    thread_id TEXT    NOT NULL REFERENCES threads (id) ON DELETE CASCADE,
    member    TEXT    NOT NULL,
    owner     INTEGER NOT NULL DEFAULT 0 CHECK (owner IN (0, 1)),
    added_at  INTEGER NOT NULL,
    PRIMARY KEY (thread_id, member)
);
