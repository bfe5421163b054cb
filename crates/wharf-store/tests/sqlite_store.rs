//! Behaviour of `SqliteStore` against a real SQLite database, both in memory and on
//! disk (the two serve reads differently).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tempfile::TempDir;
use wharf_store::sqlite::{Durability, SqliteStore};
use wharf_store::{
    Compare, KeyValue, Op, Revision, Store, StoreError, Txn, TxnOutcome, WatchEvent, WatchReceiver,
};

/// A store and the directory that holds its file, if any.
struct Fixture {
    store: SqliteStore,
    _dir: Option<TempDir>,
}

fn in_memory() -> Fixture {
    Fixture {
        store: SqliteStore::open_in_memory().expect("open in-memory store"),
        _dir: None,
    }
}

fn on_disk() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store =
        SqliteStore::open(dir.path().join("store.db"), Durability::Relaxed).expect("open store");
    Fixture {
        store,
        _dir: Some(dir),
    }
}

fn both() -> [Fixture; 2] {
    [in_memory(), on_disk()]
}

async fn put(store: &SqliteStore, key: &str, value: &str) -> TxnOutcome {
    store
        .txn(Txn::new().put(key, value))
        .await
        .expect("put succeeds")
}

/// Receives the next event, failing the test if none arrives in time.
async fn next_event(watch: &mut WatchReceiver) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), watch.recv())
        .await
        .expect("an event arrives in time")
        .expect("the watch stream is open")
        .expect("the event is not an error")
}

#[tokio::test]
async fn create_if_absent_succeeds_only_once() {
    for fixture in both() {
        let store = &fixture.store;
        let create = Txn::new().when_mod_revision("k", 0).put("k", "one");
        let first = store.txn(create.clone()).await.unwrap();
        assert_eq!(
            first,
            TxnOutcome {
                succeeded: true,
                revision: 1
            }
        );
        let second = store
            .txn(Txn::new().when_mod_revision("k", 0).put("k", "two"))
            .await
            .unwrap();
        assert_eq!(
            second,
            TxnOutcome {
                succeeded: false,
                revision: 1
            }
        );
        assert_eq!(store.get("k").await.unwrap().unwrap().value, b"one");
    }
}

#[tokio::test]
async fn update_at_current_revision_succeeds_and_stale_update_writes_nothing() {
    for fixture in both() {
        let store = &fixture.store;
        put(store, "k", "v1").await;
        put(store, "other", "x").await;
        let current = store.get("k").await.unwrap().unwrap();
        assert_eq!(current.mod_revision, 1);

        let update = store
            .txn(Txn::new().when_mod_revision("k", 1).put("k", "v2"))
            .await
            .unwrap();
        assert_eq!(
            update,
            TxnOutcome {
                succeeded: true,
                revision: 3
            }
        );

        let stale = store
            .txn(
                Txn::new()
                    .when_mod_revision("k", 1)
                    .put("k", "v3")
                    .put("new", "n"),
            )
            .await
            .unwrap();
        assert_eq!(
            stale,
            TxnOutcome {
                succeeded: false,
                revision: 3
            }
        );
        let after = store.get("k").await.unwrap().unwrap();
        assert_eq!(after.value, b"v2");
        assert_eq!(after.mod_revision, 3);
        assert_eq!(store.get("new").await.unwrap(), None);
        assert_eq!(store.revision().await.unwrap(), 3);
    }
}

#[tokio::test]
async fn version_compare_lets_a_queued_txn_expect_the_one_before_it() {
    for fixture in both() {
        let store = &fixture.store;
        put(store, "instance", "v1").await;
        // Both are queued before either is answered; the second expects the version
        // the first one leaves, which is known in advance (a mod revision is not).
        let first = store.txn(Txn::new().when_version("instance", 1).put("instance", "v2"));
        let second = store.txn(Txn::new().when_version("instance", 2).put("instance", "v3"));
        let stale = store.txn(Txn::new().when_version("instance", 2).put("instance", "x"));
        let (first, second, stale) = tokio::join!(first, second, stale);
        assert!(first.unwrap().succeeded);
        assert!(second.unwrap().succeeded);
        assert!(!stale.unwrap().succeeded);
        let kv = store.get("instance").await.unwrap().unwrap();
        assert_eq!((kv.value.as_slice(), kv.version), (&b"v3"[..], 3));
        // Version 0 means absent.
        assert!(
            store
                .txn(Txn::new().when_version("other", 0).put("other", "1"))
                .await
                .unwrap()
                .succeeded
        );
        assert!(
            !store
                .txn(Txn::new().when_version("other", 0).put("other", "2"))
                .await
                .unwrap()
                .succeeded
        );
    }
}

#[tokio::test]
async fn multi_op_txn_is_all_or_nothing_under_one_revision() {
    for fixture in both() {
        let store = &fixture.store;
        put(store, "a", "0").await;
        // The second comparison fails, so neither the puts nor the delete happen.
        let failed = store
            .txn(Txn {
                compares: vec![
                    Compare::ModRevision {
                        key: "a".into(),
                        revision: 1,
                    },
                    Compare::Exists { key: "b".into() },
                ],
                ops: vec![
                    Op::Put {
                        key: "b".into(),
                        value: b"1".to_vec(),
                    },
                    Op::Delete { key: "a".into() },
                ],
            })
            .await
            .unwrap();
        assert!(!failed.succeeded);
        assert!(store.get("a").await.unwrap().is_some());
        assert_eq!(store.get("b").await.unwrap(), None);

        let applied = store
            .txn(
                Txn::new()
                    .when_mod_revision("a", 1)
                    .put("b", "1")
                    .put("c", "2")
                    .delete("a"),
            )
            .await
            .unwrap();
        assert_eq!(
            applied,
            TxnOutcome {
                succeeded: true,
                revision: 2
            }
        );
        let (rows, revision) = store.range("").await.unwrap();
        assert_eq!(revision, 2);
        let keys: Vec<_> = rows
            .iter()
            .map(|kv| (kv.key.as_str(), kv.mod_revision))
            .collect();
        assert_eq!(keys, [("b", 2), ("c", 2)]);
    }
}

#[tokio::test]
async fn range_returns_exactly_the_prefix_in_key_order() {
    for fixture in both() {
        let store = &fixture.store;
        for key in ["a/z", "b", "a/é", "a", "a0", "a/", "a/b/c", "a/a", "A/x"] {
            put(store, key, key).await;
        }
        let (rows, revision) = store.range("a/").await.unwrap();
        let keys: Vec<_> = rows.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["a/", "a/a", "a/b/c", "a/z", "a/é"]);
        assert_eq!(revision, 9);
        let (all, _) = store.range("").await.unwrap();
        let mut expected: Vec<_> = all.iter().map(|kv| kv.key.clone()).collect();
        expected.sort();
        assert_eq!(all.len(), 9);
        assert_eq!(
            all.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
            expected
        );
        assert!(store.range("zz").await.unwrap().0.is_empty());
    }
}

#[tokio::test]
async fn revision_and_version_counters_follow_etcd() {
    for fixture in both() {
        let store = &fixture.store;
        assert_eq!(store.revision().await.unwrap(), 0);
        put(store, "k", "1").await;
        put(store, "other", "1").await;
        put(store, "k", "2").await;
        put(store, "k", "3").await;
        assert_eq!(
            store.get("k").await.unwrap().unwrap(),
            KeyValue {
                key: "k".into(),
                value: b"3".to_vec(),
                create_revision: 1,
                mod_revision: 4,
                version: 3,
            }
        );
        assert_eq!(store.revision().await.unwrap(), 4);
    }
}

#[tokio::test]
async fn delete_then_recreate_resets_create_revision_and_version() {
    for fixture in both() {
        let store = &fixture.store;
        put(store, "k", "1").await;
        put(store, "k", "2").await;
        let deleted = store.txn(Txn::new().delete("k")).await.unwrap();
        assert_eq!(
            deleted,
            TxnOutcome {
                succeeded: true,
                revision: 3
            }
        );
        assert_eq!(store.get("k").await.unwrap(), None);

        // Deleting an absent key changes nothing, so it uses no revision.
        let again = store.txn(Txn::new().delete("k")).await.unwrap();
        assert_eq!(
            again,
            TxnOutcome {
                succeeded: true,
                revision: 3
            }
        );

        put(store, "k", "new").await;
        let recreated = store.get("k").await.unwrap().unwrap();
        assert_eq!(recreated.create_revision, 4);
        assert_eq!(recreated.mod_revision, 4);
        assert_eq!(recreated.version, 1);
    }
}

#[tokio::test]
async fn failed_and_empty_txns_leave_the_revision_unchanged() {
    for fixture in both() {
        let store = &fixture.store;
        put(store, "k", "1").await;
        let empty = store.txn(Txn::new()).await.unwrap();
        assert_eq!(
            empty,
            TxnOutcome {
                succeeded: true,
                revision: 1
            }
        );
        let guarded_empty = store
            .txn(Txn::new().when_mod_revision("k", 1))
            .await
            .unwrap();
        assert!(guarded_empty.succeeded);
        let failed = store
            .txn(Txn::new().when_mod_revision("k", 7).put("k", "x"))
            .await
            .unwrap();
        assert!(!failed.succeeded);
        assert_eq!(store.revision().await.unwrap(), 1);
    }
}

#[tokio::test]
async fn reopening_keeps_data_and_continues_the_revision() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    {
        let store = SqliteStore::open(&path, Durability::Full).unwrap();
        put(&store, "a", "1").await;
        put(&store, "b", "2").await;
        store.txn(Txn::new().delete("a")).await.unwrap();
    }
    let store = SqliteStore::open(&path, Durability::Full).unwrap();
    assert_eq!(store.revision().await.unwrap(), 3);
    assert_eq!(store.get("a").await.unwrap(), None);
    assert_eq!(store.get("b").await.unwrap().unwrap().value, b"2");
    assert_eq!(put(&store, "c", "3").await.revision, 4);

    // The log survived too: a watch from the start replays all four changes.
    let mut watch = store.watch("", 1).await.unwrap();
    let mut revisions = Vec::new();
    for _ in 0..4 {
        revisions.push(next_event(&mut watch).await.revision());
    }
    assert_eq!(revisions, [1, 2, 3, 4]);
}

#[tokio::test]
async fn reads_see_every_acknowledged_write() {
    let fixture = on_disk();
    let store = &fixture.store;
    for i in 0..200 {
        let value = i.to_string();
        let outcome = put(store, "k", &value).await;
        let kv = store.get("k").await.unwrap().unwrap();
        assert_eq!(kv.value, value.as_bytes());
        assert_eq!(kv.mod_revision, outcome.revision);
        assert!(store.range("k").await.unwrap().1 >= outcome.revision);
    }
}

#[tokio::test]
async fn watch_replays_history_then_streams_live_changes() {
    for fixture in both() {
        let store = &fixture.store;
        put(store, "app/a", "1").await;
        put(store, "other/x", "1").await;
        put(store, "app/b", "2").await;
        store.txn(Txn::new().delete("app/a")).await.unwrap();

        let mut watch = store.watch("app/", 2).await.unwrap();
        assert_eq!(
            next_event(&mut watch).await,
            WatchEvent::Put(KeyValue {
                key: "app/b".into(),
                value: b"2".to_vec(),
                create_revision: 3,
                mod_revision: 3,
                version: 1,
            })
        );
        assert_eq!(
            next_event(&mut watch).await,
            WatchEvent::Delete {
                key: "app/a".into(),
                revision: 4
            }
        );
        put(store, "other/y", "1").await;
        put(store, "app/c", "3").await;
        let live = next_event(&mut watch).await;
        assert_eq!(live.key(), "app/c");
        assert_eq!(live.revision(), 6);

        // Watching from "now on" sees only later changes.
        let now = store.revision().await.unwrap();
        let mut from_now = store.watch("app/", now + 1).await.unwrap();
        put(store, "app/d", "4").await;
        assert_eq!(next_event(&mut from_now).await.key(), "app/d");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_has_no_gap_or_duplicate_while_writers_race_the_hand_off() {
    const WRITERS: usize = 8;
    const WRITES: usize = 150;
    for fixture in both() {
        let store = Arc::new(fixture.store);
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let store = Arc::clone(&store);
            writers.push(tokio::spawn(async move {
                for i in 0..WRITES {
                    // Every write lands under the watched prefix, so the watcher must see
                    // every revision exactly once.
                    let key = format!("w/{writer}/{}", i % 7);
                    store.txn(Txn::new().put(key, i.to_string())).await.unwrap();
                }
            }));
        }
        // Start watchers from the beginning while the writers run, at different moments,
        // so some of them hand off from replay to live in the middle of the burst.
        let mut watches = Vec::new();
        for _ in 0..4 {
            watches.push(store.watch("w/", 1).await.unwrap());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for writer in writers {
            writer.await.unwrap();
        }
        let last = (WRITERS * WRITES) as Revision;
        assert_eq!(store.revision().await.unwrap(), last);
        for mut watch in watches {
            let mut expected = 1;
            while expected <= last {
                let event = next_event(&mut watch).await;
                assert_eq!(event.revision(), expected, "gap or duplicate in the stream");
                expected += 1;
            }
        }
        drop(fixture._dir);
    }
}

#[tokio::test]
async fn watch_from_a_compacted_revision_fails() {
    for fixture in both() {
        let store = &fixture.store;
        for i in 0..5 {
            put(store, "k", &i.to_string()).await;
        }
        assert_eq!(store.compact(3).await.unwrap(), 3);
        // Compaction never moves backwards and never passes the current revision.
        assert_eq!(store.compact(1).await.unwrap(), 3);
        assert_eq!(store.compact(100).await.unwrap(), 5);
        assert_eq!(store.compact(3).await.unwrap(), 5);
        match store.watch("", 4).await {
            Err(StoreError::Compacted { requested, oldest }) => {
                assert_eq!((requested, oldest), (4, 6));
            }
            other => panic!("expected a compaction error, got {other:?}"),
        }
        // The current state is untouched, and watching from the oldest kept revision works.
        assert_eq!(store.get("k").await.unwrap().unwrap().version, 5);
        let mut watch = store.watch("", 6).await.unwrap();
        put(store, "k", "5").await;
        assert_eq!(next_event(&mut watch).await.revision(), 6);
    }
}

#[tokio::test]
async fn a_watcher_that_falls_behind_is_disconnected() {
    for fixture in both() {
        let store = fixture.store.with_watch_capacity(4);
        let mut watch = store.watch("", 1).await.unwrap();
        // Let the watcher register as live before the burst.
        put(&store, "k", "0").await;
        assert_eq!(next_event(&mut watch).await.revision(), 1);
        for i in 1..20 {
            put(&store, "k", &i.to_string()).await;
        }
        let mut received = 0;
        while let Some(event) = tokio::time::timeout(Duration::from_secs(10), watch.recv())
            .await
            .expect("the stream ends in time")
        {
            event.unwrap();
            received += 1;
        }
        assert_eq!(
            received, 4,
            "the buffered events arrive, then the stream ends"
        );
    }
}

#[tokio::test]
async fn watch_streams_end_when_the_store_is_dropped() {
    for fixture in both() {
        let mut watch = fixture.store.watch("", 1).await.unwrap();
        put(&fixture.store, "k", "v").await;
        assert_eq!(next_event(&mut watch).await.key(), "k");
        drop(fixture);
        let end = tokio::time::timeout(Duration::from_secs(10), watch.recv())
            .await
            .expect("the stream ends in time");
        assert!(end.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cas_increments_lose_no_update() {
    const TASKS: usize = 8;
    const INCREMENTS: usize = 200;
    for fixture in both() {
        let store = Arc::new(fixture.store);
        let mut tasks = Vec::new();
        for _ in 0..TASKS {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let mut retries = 0u64;
                for _ in 0..INCREMENTS {
                    loop {
                        let current = store.get("counter").await.unwrap();
                        let (count, revision) = match &current {
                            Some(kv) => (
                                std::str::from_utf8(&kv.value)
                                    .unwrap()
                                    .parse::<u64>()
                                    .unwrap(),
                                kv.mod_revision,
                            ),
                            None => (0, 0),
                        };
                        let outcome = store
                            .txn(
                                Txn::new()
                                    .when_mod_revision("counter", revision)
                                    .put("counter", (count + 1).to_string()),
                            )
                            .await
                            .unwrap();
                        if outcome.succeeded {
                            break;
                        }
                        retries += 1;
                    }
                }
                retries
            }));
        }
        let mut retries = 0;
        for task in tasks {
            retries += task.await.unwrap();
        }
        let counter = store.get("counter").await.unwrap().unwrap();
        let total = (TASKS * INCREMENTS) as i64;
        assert_eq!(counter.value, total.to_string().as_bytes());
        assert_eq!(counter.version, total);
        assert_eq!(store.revision().await.unwrap(), total);
        // Contention is what this test is about; make sure there was some.
        println!("{retries} compare failures retried");
        drop(fixture._dir);
    }
}

/// A model of the store's semantics: a map and a counter, updated in the obvious way.
#[derive(Default)]
struct Model {
    keys: BTreeMap<String, KeyValue>,
    revision: Revision,
    events: Vec<WatchEvent>,
}

impl Model {
    fn apply(&mut self, txn: &Txn) -> TxnOutcome {
        let holds = txn.compares.iter().all(|compare| match compare {
            Compare::ModRevision { key, revision } => {
                self.keys.get(key).map_or(0, |kv| kv.mod_revision) == *revision
            }
            Compare::Version { key, version } => {
                self.keys.get(key).map_or(0, |kv| kv.version) == *version
            }
            Compare::Exists { key } => self.keys.contains_key(key),
        });
        if !holds {
            return TxnOutcome {
                succeeded: false,
                revision: self.revision,
            };
        }
        let next = self.revision + 1;
        let mut changed = false;
        for op in &txn.ops {
            match op {
                Op::Put { key, value } => {
                    let kv = match self.keys.get(key) {
                        Some(old) => KeyValue {
                            value: value.clone(),
                            mod_revision: next,
                            version: old.version + 1,
                            ..old.clone()
                        },
                        None => KeyValue {
                            key: key.clone(),
                            value: value.clone(),
                            create_revision: next,
                            mod_revision: next,
                            version: 1,
                        },
                    };
                    self.events.push(WatchEvent::Put(kv.clone()));
                    self.keys.insert(key.clone(), kv);
                    changed = true;
                }
                Op::Delete { key } => {
                    if self.keys.remove(key).is_some() {
                        self.events.push(WatchEvent::Delete {
                            key: key.clone(),
                            revision: next,
                        });
                        changed = true;
                    }
                }
            }
        }
        if changed {
            self.revision = next;
        }
        TxnOutcome {
            succeeded: true,
            revision: self.revision,
        }
    }
}

const MODEL_KEYS: [&str; 4] = ["a", "b", "c/1", "c/2"];

/// A comparison described relative to the state at the time it is applied, so that
/// generated transactions succeed often enough to be interesting.
#[derive(Debug, Clone)]
enum CompareSpec {
    Current(usize),
    Absent(usize),
    Stale(usize, Revision),
    Exists(usize),
    /// The key's version plus a small offset (0: the current version).
    Version(usize, i64),
}

fn compare_spec() -> impl Strategy<Value = CompareSpec> {
    prop_oneof![
        3 => (0..MODEL_KEYS.len()).prop_map(CompareSpec::Current),
        1 => (0..MODEL_KEYS.len()).prop_map(CompareSpec::Absent),
        1 => (0..MODEL_KEYS.len(), 1..3i64).prop_map(|(k, d)| CompareSpec::Stale(k, d)),
        1 => (0..MODEL_KEYS.len()).prop_map(CompareSpec::Exists),
        2 => (0..MODEL_KEYS.len(), prop_oneof![3 => Just(0i64), 1 => -1..2i64])
            .prop_map(|(k, d)| CompareSpec::Version(k, d)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..MODEL_KEYS.len(), proptest::collection::vec(any::<u8>(), 0..4)).prop_map(
            |(k, value)| Op::Put { key: MODEL_KEYS[k].into(), value }
        ),
        1 => (0..MODEL_KEYS.len()).prop_map(|k| Op::Delete { key: MODEL_KEYS[k].into() }),
    ]
}

fn txn_spec() -> impl Strategy<Value = (Vec<CompareSpec>, Vec<Op>)> {
    (
        proptest::collection::vec(compare_spec(), 0..3),
        proptest::collection::vec(op(), 0..4),
    )
}

fn resolve(model: &Model, specs: &[CompareSpec], ops: &[Op]) -> Txn {
    let mod_revision = |k: usize| {
        model
            .keys
            .get(MODEL_KEYS[k])
            .map_or(0, |kv| kv.mod_revision)
    };
    let compares = specs
        .iter()
        .map(|spec| match *spec {
            CompareSpec::Current(k) => Compare::ModRevision {
                key: MODEL_KEYS[k].into(),
                revision: mod_revision(k),
            },
            CompareSpec::Absent(k) => Compare::ModRevision {
                key: MODEL_KEYS[k].into(),
                revision: 0,
            },
            CompareSpec::Stale(k, delta) => Compare::ModRevision {
                key: MODEL_KEYS[k].into(),
                revision: (mod_revision(k) - delta).max(0),
            },
            CompareSpec::Exists(k) => Compare::Exists {
                key: MODEL_KEYS[k].into(),
            },
            CompareSpec::Version(k, delta) => Compare::Version {
                key: MODEL_KEYS[k].into(),
                version: (model.keys.get(MODEL_KEYS[k]).map_or(0, |kv| kv.version) + delta).max(0),
            },
        })
        .collect();
    Txn {
        compares,
        ops: ops.to_vec(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_txns_match_the_reference_model(
        txns in proptest::collection::vec(txn_spec(), 1..40)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = SqliteStore::open_in_memory().unwrap();
            let mut model = Model::default();
            for (specs, ops) in &txns {
                let txn = resolve(&model, specs, ops);
                let expected = model.apply(&txn);
                let actual = store.txn(txn.clone()).await.unwrap();
                prop_assert_eq!(actual, expected, "outcome of {:?}", txn);
                let (rows, revision) = store.range("").await.unwrap();
                prop_assert_eq!(revision, model.revision);
                prop_assert_eq!(rows, model.keys.values().cloned().collect::<Vec<_>>());
                let (c_rows, _) = store.range("c/").await.unwrap();
                prop_assert_eq!(
                    c_rows,
                    model.keys.range("c/".to_string().."c0".to_string()).map(|(_, kv)| kv.clone()).collect::<Vec<_>>()
                );
            }
            // The change log replays exactly the model's history.
            let mut watch = store.watch("", 1).await.unwrap();
            for expected in &model.events {
                prop_assert_eq!(&next_event(&mut watch).await, expected);
            }
            Ok(())
        })?;
    }
}

/// A database written by schema 1 (each value stored before its key's revisions) opens
/// with everything it held, and goes on from its last revision.
#[tokio::test]
async fn a_schema_1_database_is_migrated_on_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE kv (key BLOB PRIMARY KEY, value BLOB NOT NULL,
                 create_revision INTEGER NOT NULL, mod_revision INTEGER NOT NULL,
                 version INTEGER NOT NULL) WITHOUT ROWID;
             CREATE TABLE log (revision INTEGER NOT NULL, seq INTEGER NOT NULL,
                 key BLOB NOT NULL, value BLOB, create_revision INTEGER NOT NULL,
                 version INTEGER NOT NULL, PRIMARY KEY (revision, seq)) WITHOUT ROWID;
             CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 0),
                 revision INTEGER NOT NULL, compacted INTEGER NOT NULL);
             INSERT INTO meta VALUES (0, 2, 0);
             INSERT INTO kv VALUES (CAST('a' AS BLOB), CAST('one' AS BLOB), 1, 2, 2);
             INSERT INTO log VALUES (1, 0, CAST('a' AS BLOB), CAST('zero' AS BLOB), 1, 1);
             INSERT INTO log VALUES (2, 0, CAST('a' AS BLOB), CAST('one' AS BLOB), 1, 2);
             PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&path, Durability::Full).expect("schema 1 opens");
    let a = store.get("a").await.unwrap().expect("a survived");
    assert_eq!(
        (
            a.value.as_slice(),
            a.create_revision,
            a.mod_revision,
            a.version
        ),
        (&b"one"[..], 1, 2, 2)
    );
    assert_eq!(store.revision().await.unwrap(), 2);
    let outcome = store
        .txn(Txn::new().when_version("a", 2).put("a", "two"))
        .await
        .unwrap();
    assert_eq!((outcome.succeeded, outcome.revision), (true, 3));
    let mut watch = store.watch("a", 1).await.unwrap();
    for (revision, value) in [(1, "zero"), (2, "one"), (3, "two")] {
        match next_event(&mut watch).await {
            WatchEvent::Put(kv) => assert_eq!(
                (kv.mod_revision, kv.value),
                (revision, value.as_bytes().to_vec())
            ),
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(store);
    // Opening it again finds schema 2 and changes nothing.
    let store = SqliteStore::open(&path, Durability::Full).expect("schema 2 opens");
    assert_eq!(store.get("a").await.unwrap().unwrap().value, b"two");
}
