//! The embedded SQLite backend.
//!
//! Layout on disk (schema 2; a schema 1 file is migrated when opened): a `kv` table
//! holding the revision metadata and current value of every live key (the value last,
//! so that a comparison never reads it), a `log` table holding one row per change (a put, or a delete with a NULL
//! value) that watchers replay, and a one-row `meta` table holding the store revision and
//! the compaction point. Keys are stored as BLOBs of their UTF-8 bytes so that SQLite's
//! byte-wise ordering is exactly Rust's `String` ordering and a prefix scan is a plain
//! index range.
//!
//! Writes: one writer thread owns the only read-write connection. [`SqliteStore::txn`]
//! queues its transaction and waits for an answer; the writer drains whatever is queued,
//! applies each transaction in order inside one SQLite transaction (each in a savepoint,
//! so one that fails writes nothing), commits once — one fsync for the whole batch — and
//! only then answers every caller and publishes the changes to live watchers. This is
//! group commit: under many concurrent writers the cost of the fsync is shared. A
//! second thread checkpoints the WAL into the database file in the background, so no
//! commit waits for a checkpoint.
//!
//! Reads: file-backed stores read through a small pool of read-only connections on the
//! blocking thread pool; WAL mode lets them run while the writer commits, and because a
//! read transaction starts after every commit that was acknowledged before it, reads see
//! every acknowledged write. An in-memory database cannot be shared between connections
//! in WAL mode, so [`SqliteStore::open_in_memory`] routes reads through the writer thread
//! instead, between batches.
//!
//! One process may open a database file at a time: live watch events come from the
//! writer of this process, so writes made by another process would not reach watchers.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Type;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::{
    Compare, KeyValue, Op, Revision, Store, StoreError, Txn, TxnOutcome, WatchEvent, WatchReceiver,
};

/// How hard a commit works to survive failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// WAL mode with `synchronous=FULL`: every commit is fsynced before it is
    /// acknowledged, so an acknowledged write survives SIGKILL of the process and loss
    /// of power to the machine. The default for real deployments.
    Full,
    /// WAL mode with `synchronous=OFF`: commits reach the operating system (so they
    /// survive SIGKILL of the process) but are never fsynced, so a power loss or kernel
    /// crash may lose recent writes or corrupt the file. For tests only.
    Relaxed,
}

/// How many events a live watcher may have waiting before it is disconnected.
const DEFAULT_WATCH_CAPACITY: usize = 4096;
/// The most transactions committed together; bounds the latency of one batch.
const MAX_BATCH: usize = 1024;
/// How many revisions a catching-up watcher reads from the log at once, so that a long
/// replay never holds the whole log in memory.
const REPLAY_CHUNK_REVISIONS: Revision = 1024;
/// How many idle read connections are kept open.
const MAX_IDLE_READERS: usize = 8;
/// How long a connection waits for a lock held by another connection (a WAL
/// checkpoint, or a second process) before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The schema version recorded in `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 2;
/// How often the checkpointer moves committed pages from the WAL into the database.
const CHECKPOINT_PERIOD: Duration = Duration::from_millis(100);

/// The `kv` table keeps the value last in its rows: a comparison reads a key's
/// revisions without stepping over (or into the overflow pages of) its value.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log (
    revision INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    key BLOB NOT NULL,
    value BLOB,
    create_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (revision, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    revision INTEGER NOT NULL,
    compacted INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (id, revision, compacted) VALUES (0, 0, 0);
";

/// A [`Store`] kept in an embedded SQLite database.
///
/// Dropping the store stops its writer thread after the writes already queued, closes
/// the database and ends every watch stream.
pub struct SqliteStore {
    requests: std_mpsc::Sender<Request>,
    writer: Option<JoinHandle<()>>,
    reader: Reader,
    hub: Arc<WatchHub>,
    revision: Arc<AtomicI64>,
    watch_capacity: usize,
    checkpointer: Option<Checkpointer>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("revision", &self.revision.load(Ordering::Acquire))
            .field("watch_capacity", &self.watch_capacity)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`. The store continues from the
    /// last revision written to the file.
    pub fn open(path: impl AsRef<Path>, durability: Durability) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let conn = Connection::open(&path).map_err(backend)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
            .map_err(backend)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "{} cannot use WAL mode (journal_mode is {mode})",
                path.display()
            )));
        }
        match durability {
            Durability::Full => {
                conn.pragma_update(None, "synchronous", "FULL")
                    .map_err(backend)?;
                // On macOS a plain fsync does not reach the platter; F_FULLFSYNC does.
                // Elsewhere these pragmas are ignored.
                conn.pragma_update(None, "fullfsync", "ON")
                    .map_err(backend)?;
                conn.pragma_update(None, "checkpoint_fullfsync", "ON")
                    .map_err(backend)?;
            }
            Durability::Relaxed => {
                conn.pragma_update(None, "synchronous", "OFF")
                    .map_err(backend)?;
            }
        }
        init_schema(&conn)?;
        // Checkpoints run on a thread of their own (see `Checkpointer`), off the
        // writer's path to acknowledging transactions.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(backend)?;
        let checkpointer = Checkpointer::start(&path, durability)?;
        let pool = Arc::new(ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
        });
        // Open one reader now so that a database that cannot be read fails here rather
        // than on the first read.
        let first_reader = pool.open_connection().map_err(backend)?;
        pool.put_back(first_reader);
        let mut store = Self::start(conn, Some(pool))?;
        store.checkpointer = Some(checkpointer);
        Ok(store)
    }

    /// Opens a fresh database that lives in memory and disappears with the store. Reads
    /// are served by the writer thread; otherwise it behaves like a file-backed store.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(backend)?;
        init_schema(&conn)?;
        Self::start(conn, None)
    }

    /// Sets how many events a live watcher created after this call may have waiting
    /// before it is disconnected (at least 1).
    pub fn with_watch_capacity(mut self, capacity: usize) -> Self {
        self.watch_capacity = capacity.max(1);
        self
    }

    /// Trims the change log every `period` to the newest `retained` revisions, for as
    /// long as the store lives, so that the database does not grow with every write
    /// ever made; a watcher further behind than that reloads.
    pub fn spawn_log_compaction(
        self: &std::sync::Arc<Self>,
        retained: Revision,
        period: std::time::Duration,
    ) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = std::sync::Arc::downgrade(self);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(store) = store.upgrade() else {
                    return;
                };
                let Ok(revision) = store.revision().await else {
                    continue;
                };
                if revision > retained {
                    if let Err(error) = store.compact(revision - retained).await {
                        tracing::warn!(%error, "compacting the change log failed");
                    }
                }
            }
        });
    }

    /// Drops the change log up to and including `keep_after` (clamped to the current
    /// revision), so that watches can start from `keep_after + 1` onwards. Returns the
    /// compaction point now in force, which never moves backwards.
    pub async fn compact(&self, keep_after: Revision) -> Result<Revision, StoreError> {
        match self.submit(Work::Compact(keep_after)).await? {
            Answer::Compacted(revision) => Ok(revision),
            Answer::Txn(_) => Err(StoreError::Backend(
                "writer answered a compaction with a transaction outcome".into(),
            )),
        }
    }

    fn start(conn: Connection, pool: Option<Arc<ReadPool>>) -> Result<Self, StoreError> {
        let (revision, _) = read_meta(&conn).map_err(backend)?;
        let revision_cell = Arc::new(AtomicI64::new(revision));
        let hub = Arc::new(WatchHub::new(revision));
        let (requests, queue) = std_mpsc::channel();
        let writer = Writer {
            conn,
            hub: Arc::clone(&hub),
            revision: Arc::clone(&revision_cell),
            known_revision: revision,
        };
        let handle = std::thread::Builder::new()
            .name("wharf-store-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|error| StoreError::Backend(format!("cannot start writer: {error}")))?;
        let reader = match pool {
            Some(pool) => Reader::Pool(pool),
            None => Reader::Writer(requests.clone()),
        };
        Ok(Self {
            requests,
            writer: Some(handle),
            reader,
            hub,
            revision: revision_cell,
            watch_capacity: DEFAULT_WATCH_CAPACITY,
            checkpointer: None,
        })
    }

    async fn submit(&self, work: Work) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Write { work, reply })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// Copies committed pages from the WAL back into the database file, on a connection
/// and thread of its own.
///
/// SQLite's automatic checkpoint runs inside whichever commit crosses the WAL's size
/// threshold, so every few hundred batches one caller would wait for a whole
/// checkpoint (page copies and a database fsync) before its own acknowledgement. A
/// passive checkpoint from another connection runs alongside the writer instead; it
/// changes nothing about what a commit guarantees, since a commit is durable once its
/// WAL frames are synced.
struct Checkpointer {
    stop: std_mpsc::Sender<()>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(backend)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        let synchronous = match durability {
            Durability::Full => "FULL",
            Durability::Relaxed => "OFF",
        };
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(backend)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(backend)?;
        let (stop, stopped) = std_mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wharf-store-checkpoint".into())
            .spawn(move || {
                while let Err(std_mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_PERIOD)
                {
                    if let Err(error) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(%error, "checkpointing the store's WAL failed");
                    }
                }
            })
            .map_err(|error| StoreError::Backend(format!("cannot start checkpointer: {error}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // An explicit message rather than closing the channel: watch tasks of an
        // in-memory store hold clones of the sender, and must not keep the writer alive.
        let _ = self.requests.send(Request::Shutdown);
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                tracing::error!("the store writer thread panicked");
            }
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_owned();
        self.reader.read(move |conn| read_key(conn, &key)).await
    }

    async fn range(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let prefix = prefix.to_owned();
        self.reader
            .read(move |conn| read_range(conn, &prefix))
            .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        match self.submit(Work::Txn(txn)).await? {
            Answer::Txn(outcome) => Ok(outcome),
            Answer::Compacted(_) => Err(StoreError::Backend(
                "writer answered a transaction with a compaction result".into(),
            )),
        }
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        // The writer stores the new revision before it acknowledges a batch, so this
        // never reports less than a write the caller has seen acknowledged.
        Ok(self.revision.load(Ordering::Acquire))
    }

    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchReceiver, StoreError> {
        let from = from.max(1);
        let (_, compacted) = self
            .reader
            .read(|conn| read_meta(conn).map_err(backend))
            .await?;
        if from <= compacted {
            return Err(StoreError::Compacted {
                requested: from,
                oldest: compacted + 1,
            });
        }
        let (sender, receiver) = mpsc::channel(self.watch_capacity);
        // A watcher from "now on" goes live before this returns, so a write made after
        // `watch` returns is certain to be delivered live; only one that must replay
        // history is handed to a task.
        let sender = match self.hub.try_register(prefix, from, sender) {
            Registration::Live | Registration::Closed => return Ok(receiver),
            Registration::Behind(sender) => sender,
        };
        tokio::spawn(feed_watcher(
            self.reader.clone(),
            Arc::clone(&self.hub),
            prefix.to_owned(),
            from,
            sender,
        ));
        Ok(receiver)
    }
}

fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// Schema 1 kept each value before the key's revisions in `kv`; schema 2 keeps it last.
const MIGRATE_1_TO_2: &str = "
BEGIN IMMEDIATE;
ALTER TABLE kv RENAME TO kv_schema_1;
CREATE TABLE kv (
    key BLOB PRIMARY KEY,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    value BLOB NOT NULL
) WITHOUT ROWID;
INSERT INTO kv (key, create_revision, mod_revision, version, value)
    SELECT key, create_revision, mod_revision, version, value FROM kv_schema_1;
DROP TABLE kv_schema_1;
PRAGMA user_version = 2;
COMMIT;
";

fn init_schema(conn: &Connection) -> Result<(), StoreError> {
    let mut version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(backend)?;
    if version == 1 {
        conn.execute_batch(MIGRATE_1_TO_2).map_err(|error| {
            let _ = conn.execute_batch("ROLLBACK");
            backend(error)
        })?;
        version = 2;
    }
    if version != 0 && version != SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "database schema version {version} is not the supported version {SCHEMA_VERSION}"
        )));
    }
    conn.execute_batch(SCHEMA).map_err(backend)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(backend)?;
    Ok(())
}

/// Reads the store revision and the compaction point.
fn read_meta(conn: &Connection) -> Result<(Revision, Revision), rusqlite::Error> {
    conn.prepare_cached("SELECT revision, compacted FROM meta WHERE id = 0")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
}

/// The smallest byte string greater than every string starting with `prefix`, or `None`
/// when no such bound exists (the prefix is empty or all 0xFF, which UTF-8 never is).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn key_from_blob(column: usize, bytes: Vec<u8>) -> Result<String, rusqlite::Error> {
    String::from_utf8(bytes).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(column, Type::Blob, error.into())
    })
}

/// Maps a `key, value, create_revision, mod_revision, version` row.
fn key_value_row(row: &rusqlite::Row<'_>) -> Result<KeyValue, rusqlite::Error> {
    Ok(KeyValue {
        key: key_from_blob(0, row.get(0)?)?,
        value: row.get(1)?,
        create_revision: row.get(2)?,
        mod_revision: row.get(3)?,
        version: row.get(4)?,
    })
}

fn read_key(conn: &Connection, key: &str) -> Result<Option<KeyValue>, StoreError> {
    conn.prepare_cached(
        "SELECT key, value, create_revision, mod_revision, version FROM kv WHERE key = ?1",
    )
    .and_then(|mut statement| {
        statement
            .query_row([key.as_bytes()], key_value_row)
            .optional()
    })
    .map_err(backend)
}

fn read_range(conn: &Connection, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
    let read = || -> Result<(Vec<KeyValue>, Revision), rusqlite::Error> {
        // One read transaction, so the rows and the revision come from the same snapshot.
        let tx = conn.unchecked_transaction()?;
        let rows = match prefix_end(prefix.as_bytes()) {
            Some(end) => tx
                .prepare_cached(
                    "SELECT key, value, create_revision, mod_revision, version FROM kv \
                     WHERE key >= ?1 AND key < ?2 ORDER BY key",
                )?
                .query_map(params![prefix.as_bytes(), end], key_value_row)?
                .collect::<Result<Vec<_>, _>>()?,
            None => tx
                .prepare_cached(
                    "SELECT key, value, create_revision, mod_revision, version FROM kv \
                     WHERE key >= ?1 ORDER BY key",
                )?
                .query_map([prefix.as_bytes()], key_value_row)?
                .collect::<Result<Vec<_>, _>>()?,
        };
        let (revision, _) = read_meta(&tx)?;
        Ok((rows, revision))
    };
    read().map_err(backend)
}

/// Log entries read for a catching-up watcher.
struct LogChunk {
    events: Vec<WatchEvent>,
    /// Every change with a revision up to and including this one has been read.
    through: Revision,
}

/// Reads the changes under `prefix` from revision `from` onwards, at most
/// [`REPLAY_CHUNK_REVISIONS`] revisions of them.
fn read_log_chunk(conn: &Connection, prefix: &str, from: Revision) -> Result<LogChunk, StoreError> {
    let tx = conn.unchecked_transaction().map_err(backend)?;
    let (revision, compacted) = read_meta(&tx).map_err(backend)?;
    if from <= compacted {
        return Err(StoreError::Compacted {
            requested: from,
            oldest: compacted + 1,
        });
    }
    let through = revision
        .min(from.saturating_add(REPLAY_CHUNK_REVISIONS - 1))
        .max(from - 1);
    let end = prefix_end(prefix.as_bytes());
    let read = || -> Result<Vec<WatchEvent>, rusqlite::Error> {
        tx.prepare_cached(
            "SELECT revision, key, value, create_revision, version FROM log \
             WHERE revision >= ?1 AND revision <= ?2 AND key >= ?3 AND (?4 IS NULL OR key < ?4) \
             ORDER BY revision, seq",
        )?
        .query_map(params![from, through, prefix.as_bytes(), end], |row| {
            let revision: Revision = row.get(0)?;
            let key = key_from_blob(1, row.get(1)?)?;
            let value: Option<Vec<u8>> = row.get(2)?;
            Ok(match value {
                Some(value) => WatchEvent::Put(KeyValue {
                    key,
                    value,
                    create_revision: row.get(3)?,
                    mod_revision: revision,
                    version: row.get(4)?,
                }),
                None => WatchEvent::Delete { key, revision },
            })
        })?
        .collect()
    };
    let events = read().map_err(backend)?;
    Ok(LogChunk { events, through })
}

/// Where reads run.
#[derive(Clone)]
enum Reader {
    /// Read-only connections of a file-backed store, used on the blocking thread pool.
    Pool(Arc<ReadPool>),
    /// The writer thread of an in-memory store, between batches.
    Writer(std_mpsc::Sender<Request>),
}

impl Reader {
    async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        match self {
            Reader::Pool(pool) => {
                let pool = Arc::clone(pool);
                tokio::task::spawn_blocking(move || pool.with_connection(read))
                    .await
                    .map_err(|error| StoreError::Backend(format!("read task failed: {error}")))?
            }
            Reader::Writer(requests) => {
                let (reply, answer) = oneshot::channel();
                let job: ReadJob = Box::new(move |conn| {
                    // The caller may have stopped waiting; then nobody needs the answer.
                    let _ = reply.send(read(conn));
                });
                requests
                    .send(Request::Read(job))
                    .map_err(|_| StoreError::Closed)?;
                answer.await.map_err(|_| StoreError::Closed)?
            }
        }
    }
}

struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn open_connection(&self) -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(conn)
    }

    fn with_connection<T>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let idle = self.idle.lock().expect("read pool lock poisoned").pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open_connection().map_err(backend)?,
        };
        let result = read(&conn);
        // A connection that failed a read may be in a bad state; let it close.
        if result.is_ok() {
            self.put_back(conn);
        }
        result
    }

    fn put_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("read pool lock poisoned");
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }
}

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

/// What the writer thread is asked to do.
enum Request {
    Write {
        work: Work,
        reply: oneshot::Sender<Result<Answer, StoreError>>,
    },
    Read(ReadJob),
    Shutdown,
}

enum Work {
    Txn(Txn),
    Compact(Revision),
}

enum Answer {
    Txn(TxnOutcome),
    Compacted(Revision),
}

type Reply = oneshot::Sender<Result<Answer, StoreError>>;

/// The owner of the read-write connection.
struct Writer {
    conn: Connection,
    hub: Arc<WatchHub>,
    revision: Arc<AtomicI64>,
    /// The revision of the last batch this writer committed, to notice writes by
    /// another process (which would bypass the watch hub).
    known_revision: Revision,
}

/// The result of a committed batch.
struct Batch {
    answers: Vec<Result<Answer, StoreError>>,
    events: Vec<WatchEvent>,
    revision: Revision,
}

impl Writer {
    fn run(mut self, queue: std_mpsc::Receiver<Request>) {
        // Closing the hub in a guard ends every watch stream even if this thread panics,
        // so watchers never wait on a writer that is gone.
        let _close_hub = CloseHubOnExit(Arc::clone(&self.hub));
        let mut pending: Vec<(Work, Reply)> = Vec::new();
        'serve: while let Ok(first) = queue.recv() {
            let mut next = Some(first);
            while let Some(request) = next {
                match request {
                    Request::Write { work, reply } => pending.push((work, reply)),
                    Request::Read(job) => {
                        // A read queued after a write must see it.
                        self.commit(&mut pending);
                        job(&self.conn);
                    }
                    Request::Shutdown => {
                        self.commit(&mut pending);
                        break 'serve;
                    }
                }
                next = if pending.len() < MAX_BATCH {
                    queue.try_recv().ok()
                } else {
                    None
                };
            }
            self.commit(&mut pending);
        }
    }

    /// Applies and commits the pending writes, publishes their changes and answers
    /// their callers, in that order: a caller's next read or watch must find its write.
    fn commit(&mut self, pending: &mut Vec<(Work, Reply)>) {
        if pending.is_empty() {
            return;
        }
        let (works, replies): (Vec<Work>, Vec<Reply>) = std::mem::take(pending).into_iter().unzip();
        match self.apply_batch(&works) {
            Ok(batch) => {
                self.known_revision = batch.revision;
                self.revision.store(batch.revision, Ordering::Release);
                self.hub.publish(&batch.events, batch.revision);
                for (reply, answer) in replies.into_iter().zip(batch.answers) {
                    // A caller that gave up waiting still had its write applied, as with
                    // any database; there is nobody left to tell.
                    let _ = reply.send(answer);
                }
            }
            Err(error) => {
                tracing::error!(%error, writes = works.len(), "store batch failed to commit");
                for reply in replies {
                    let _ = reply.send(Err(backend_ref(&error)));
                }
            }
        }
    }

    fn apply_batch(&mut self, works: &[Work]) -> Result<Batch, rusqlite::Error> {
        let mut tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (start_revision, start_compacted) = read_meta(&tx)?;
        if start_revision != self.known_revision {
            tracing::warn!(
                expected = self.known_revision,
                found = start_revision,
                "the store revision moved outside this writer; another process writes this database"
            );
        }
        let mut revision = start_revision;
        let mut compacted = start_compacted;
        let mut answers = Vec::with_capacity(works.len());
        let mut events = Vec::new();
        for work in works {
            match work {
                Work::Txn(txn) => {
                    let savepoint = tx.savepoint()?;
                    match apply_txn(&savepoint, txn, revision + 1) {
                        Ok(Some(changes)) => {
                            savepoint.commit()?;
                            if !changes.is_empty() {
                                revision += 1;
                            }
                            events.extend(changes);
                            answers.push(Ok(Answer::Txn(TxnOutcome {
                                succeeded: true,
                                revision,
                            })));
                        }
                        Ok(None) => {
                            savepoint.finish()?;
                            answers.push(Ok(Answer::Txn(TxnOutcome {
                                succeeded: false,
                                revision,
                            })));
                        }
                        Err(error) => {
                            // Only this transaction fails; the rest of the batch commits.
                            savepoint.finish()?;
                            answers.push(Err(backend(error)));
                        }
                    }
                }
                Work::Compact(keep_after) => {
                    let target = (*keep_after).min(revision);
                    if target > compacted {
                        tx.prepare_cached("DELETE FROM log WHERE revision <= ?1")?
                            .execute([target])?;
                        compacted = target;
                    }
                    answers.push(Ok(Answer::Compacted(compacted)));
                }
            }
        }
        if revision != start_revision || compacted != start_compacted {
            tx.prepare_cached("UPDATE meta SET revision = ?1, compacted = ?2 WHERE id = 0")?
                .execute([revision, compacted])?;
        }
        tx.commit()?;
        Ok(Batch {
            answers,
            events,
            revision,
        })
    }
}

fn backend_ref(error: &rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// Applies one transaction at `revision`. Returns `None` when a comparison fails (having
/// written nothing), otherwise the changes made, in order; a transaction that changes
/// nothing (say, deleting an absent key) returns no changes and uses no revision.
fn apply_txn(
    conn: &Connection,
    txn: &Txn,
    revision: Revision,
) -> Result<Option<Vec<WatchEvent>>, rusqlite::Error> {
    for compare in &txn.compares {
        let holds = match compare {
            Compare::ModRevision {
                key,
                revision: expected,
            } => revisions_of(conn, key)?.map_or(0, |(revision, _)| revision) == *expected,
            Compare::Version {
                key,
                version: expected,
            } => revisions_of(conn, key)?.map_or(0, |(_, version)| version) == *expected,
            Compare::Exists { key } => revisions_of(conn, key)?.is_some(),
        };
        if !holds {
            return Ok(None);
        }
    }
    let mut changes = Vec::new();
    for op in &txn.ops {
        let seq = changes.len() as i64;
        match op {
            Op::Put { key, value } => {
                // One statement creates or updates the key and answers its revisions.
                let (create_revision, version): (Revision, i64) = conn
                    .prepare_cached(
                        "INSERT INTO kv (key, create_revision, mod_revision, version, value) \
                         VALUES (?1, ?2, ?2, 1, ?3) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                         mod_revision = excluded.mod_revision, version = version + 1 \
                         RETURNING create_revision, version",
                    )?
                    .query_row(params![key.as_bytes(), revision, value], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })?;
                conn.prepare_cached(
                    "INSERT INTO log (revision, seq, key, value, create_revision, version) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(params![
                    revision,
                    seq,
                    key.as_bytes(),
                    value,
                    create_revision,
                    version
                ])?;
                changes.push(WatchEvent::Put(KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision,
                    mod_revision: revision,
                    version,
                }));
            }
            Op::Delete { key } => {
                let removed = conn
                    .prepare_cached("DELETE FROM kv WHERE key = ?1")?
                    .execute([key.as_bytes()])?;
                if removed > 0 {
                    conn.prepare_cached(
                        "INSERT INTO log (revision, seq, key, value, create_revision, version) \
                         VALUES (?1, ?2, ?3, NULL, 0, 0)",
                    )?
                    .execute(params![revision, seq, key.as_bytes()])?;
                    changes.push(WatchEvent::Delete {
                        key: key.clone(),
                        revision,
                    });
                }
            }
        }
    }
    Ok(Some(changes))
}

/// A key's `mod_revision` and `version`, if it exists.
fn revisions_of(conn: &Connection, key: &str) -> Result<Option<(Revision, i64)>, rusqlite::Error> {
    conn.prepare_cached("SELECT mod_revision, version FROM kv WHERE key = ?1")?
        .query_row([key.as_bytes()], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
}

type WatchSender = mpsc::Sender<Result<WatchEvent, StoreError>>;

/// Live watchers and the last revision published to them.
struct WatchHub {
    state: Mutex<HubState>,
}

struct HubState {
    /// Every change up to this revision has been offered to the registered watchers.
    published: Revision,
    closed: bool,
    watchers: Vec<LiveWatcher>,
}

struct LiveWatcher {
    prefix: String,
    /// Changes before this revision were already sent from the log.
    next: Revision,
    sender: WatchSender,
}

enum Registration {
    Live,
    /// Changes from the watcher's next revision were published before it could
    /// register; it must read them from the log first.
    Behind(WatchSender),
    Closed,
}

impl WatchHub {
    fn new(published: Revision) -> Self {
        Self {
            state: Mutex::new(HubState {
                published,
                closed: false,
                watchers: Vec::new(),
            }),
        }
    }

    /// Offers a committed batch to every watcher. A watcher whose channel is full is
    /// dropped rather than waited for, so one slow consumer cannot stall every writer.
    fn publish(&self, events: &[WatchEvent], revision: Revision) {
        let mut state = self.state.lock().expect("watch hub lock poisoned");
        state.watchers.retain(|watcher| {
            if watcher.sender.is_closed() {
                return false;
            }
            for event in events {
                if event.revision() < watcher.next || !event.key().starts_with(&watcher.prefix)
                {
                    continue;
                }
                if watcher.sender.try_send(Ok(event.clone())).is_err() {
                    tracing::debug!(prefix = %watcher.prefix, "dropping a watcher that fell behind");
                    return false;
                }
            }
            true
        });
        state.published = state.published.max(revision);
    }

    /// Registers a watcher for live changes from `next` on, if no such change has been
    /// published yet; otherwise hands the sender back.
    fn try_register(&self, prefix: &str, next: Revision, sender: WatchSender) -> Registration {
        let mut state = self.state.lock().expect("watch hub lock poisoned");
        if state.closed {
            return Registration::Closed;
        }
        if state.published >= next {
            return Registration::Behind(sender);
        }
        state.watchers.push(LiveWatcher {
            prefix: prefix.to_owned(),
            next,
            sender,
        });
        Registration::Live
    }

    fn close(&self) {
        // Called while unwinding too, where a second panic would abort the process; a
        // poisoned lock still guards a usable list of watchers to drop.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.closed = true;
        state.watchers.clear();
    }
}

struct CloseHubOnExit(Arc<WatchHub>);

impl Drop for CloseHubOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Replays the log to a new watcher until it has caught up with what the writer has
/// published, then hands it to the hub for live changes.
///
/// The hand-off has no gap: the watcher registers only while nothing at or after its
/// next revision has been published, so every later change reaches it live. It has no
/// duplicate: a change may be committed (and so replayed) before it is published, and
/// the hub skips changes below the watcher's next revision.
async fn feed_watcher(
    reader: Reader,
    hub: Arc<WatchHub>,
    prefix: String,
    mut next: Revision,
    mut sender: WatchSender,
) {
    loop {
        sender = match hub.try_register(&prefix, next, sender) {
            Registration::Live | Registration::Closed => return,
            Registration::Behind(sender) => sender,
        };
        let chunk_prefix = prefix.clone();
        let chunk = reader
            .read(move |conn| read_log_chunk(conn, &chunk_prefix, next))
            .await;
        match chunk {
            Ok(chunk) => {
                for event in chunk.events {
                    // While replaying, wait for the consumer instead of dropping it: the
                    // backlog is bounded by the log, not by the write rate.
                    if sender.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
                next = chunk.through + 1;
            }
            // The store shut down; dropping the sender tells the watcher.
            Err(StoreError::Closed) => return,
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_byte_string() {
        assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(&[b'a', 0xFF]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }
}
