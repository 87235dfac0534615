//! The writer's two connections to the SQLite file, and its transaction.

use std::{path::Path, time::Duration};

use sqlx::SqliteConnection;

/// The writer's connection, owned (not pooled): a pooled connection costs
/// a ping to its worker thread and a spawned task on every release, and
/// commits rotating over a pool's connections each re-read what the last
/// one changed. `in_transaction` is set from BEGIN until COMMIT or
/// ROLLBACK succeeds; a transaction dropped half-way is rolled back before
/// the next statement.
///
/// `appends` is a second connection to the same file for the writer's
/// hottest statement: a lone token's log row, one autocommitted `INSERT`.
/// sqlx drives every SQLite connection from a worker thread of its own, so
/// each statement there costs two thread hand-offs (measured: ~10 context
/// switches per token); `appends` is driven directly from the writer's
/// task, which blocks for the statement alone (tens of microseconds: WAL
/// mode, `synchronous = NORMAL`, no fsync), never for a lock another
/// process holds (then the batch takes `conn`). It never checkpoints: the WAL
/// is checkpointed on `conn`'s thread ([`WriterConnection::appended`]).
/// Both connections are the writer's alone, used one after the other, so
/// they never wait for each other's lock.
pub struct WriterConnection {
    pub conn: SqliteConnection,
    pub appends: rusqlite::Connection,
    /// Commits on `appends` since the last checkpoint.
    appended: u32,
    in_transaction: bool,
    /// The last revision handed out. One writer writes the file, so one
    /// counter numbers every change of the database (a revision handed to
    /// a batch that is not stored leaves a gap: revisions only need to
    /// grow).
    last_rev: i64,
}

impl std::fmt::Debug for WriterConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterConnection")
            .field("in_transaction", &self.in_transaction)
            .finish_non_exhaustive()
    }
}

/// Commits on the append connection between two checkpoints: about
/// SQLite's own automatic checkpoint (1,000 pages), at one page per commit.
const APPENDS_PER_CHECKPOINT: u32 = 1000;

impl WriterConnection {
    pub(super) fn new(
        conn: SqliteConnection,
        appends: rusqlite::Connection,
        last_rev: i64,
    ) -> Self {
        Self {
            conn,
            appends,
            appended: 0,
            in_transaction: false,
            last_rev,
        }
    }

    /// The database's next revision.
    pub fn next_rev(&mut self) -> i64 {
        self.last_rev += 1;
        self.last_rev
    }

    /// Counts a commit on `appends`; every [`APPENDS_PER_CHECKPOINT`],
    /// checkpoints the WAL (passive: never waits for readers) on `conn`'s
    /// worker thread, so the writer's task never blocks on its fsyncs.
    pub async fn appended(&mut self) -> Result<(), sqlx::Error> {
        self.appended += 1;
        if self.appended >= APPENDS_PER_CHECKPOINT {
            self.appended = 0;
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut self.conn)
                .await?;
        }
        Ok(())
    }

    /// Makes sure no abandoned transaction is open.
    pub(super) async fn settle(&mut self) {
        if self.in_transaction {
            let _ = sqlx::query("ROLLBACK").execute(&mut self.conn).await;
            self.in_transaction = false;
        }
    }
}

/// One transaction of the writer's, holding its connection. Dropped
/// without [`SqliteTx::commit`], it is rolled back (before the writer's
/// next statement).
pub struct SqliteTx(tokio::sync::OwnedMutexGuard<WriterConnection>);

impl SqliteTx {
    /// `BEGIN IMMEDIATE`: takes the write lock at once.
    pub(super) async fn begin(
        mut writer: tokio::sync::OwnedMutexGuard<WriterConnection>,
    ) -> Result<Self, sqlx::Error> {
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut writer.conn)
            .await?;
        writer.in_transaction = true;
        Ok(Self(writer))
    }

    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        sqlx::query("COMMIT").execute(&mut self.0.conn).await?;
        self.0.in_transaction = false;
        Ok(())
    }

    /// The database's next revision (see [`WriterConnection::next_rev`]).
    pub fn next_rev(&mut self) -> i64 {
        self.0.next_rev()
    }
}

impl std::ops::Deref for SqliteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.0.conn
    }
}

impl std::ops::DerefMut for SqliteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.0.conn
    }
}

/// The writer's append connection (see [`WriterConnection`]), with the
/// settings of sqlx's connections but no busy wait (the database is
/// already in WAL mode).
pub(super) fn open_appends(path: &Path) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // Never waits for a lock (it runs on a runtime thread): a busy
    // database sends the batch to the transaction's path.
    conn.busy_timeout(Duration::ZERO)?;
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0;",
    )?;
    Ok(conn)
}
