//! Acknowledged writes survive SIGKILL, and how fast durable writes are.
//!
//! The crash test re-executes this test binary to run `durability_child` in a child
//! process (libtest's `--exact` filter works the same under cargo test and nextest).
//! The child finds its database path in an environment variable; without it, as in a
//! normal test run, it returns at once.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wharf_store::sqlite::{Durability, SqliteStore};
use wharf_store::{Store, Txn};

const CHILD_DB_ENV: &str = "WHARF_STORE_DURABILITY_CHILD_DB";
const CHILD_WRITERS: usize = 8;
/// The child stops on its own after this long, in case its parent died without
/// killing it.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);

#[test]
fn durability_child() {
    let Some(path) = std::env::var_os(CHILD_DB_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("child runtime");
    runtime.block_on(async move {
        let store = Arc::new(SqliteStore::open(path, Durability::Full).expect("child opens db"));
        let run = std::process::id();
        let started = Instant::now();
        let mut writers = Vec::new();
        for writer in 0..CHILD_WRITERS {
            let store = Arc::clone(&store);
            writers.push(tokio::spawn(async move {
                let mut i = 0u64;
                while started.elapsed() < CHILD_LIFETIME {
                    let key = format!("k/{run}/{writer}/{i}");
                    let value = format!("v-{run}-{writer}-{i}");
                    let outcome = store
                        .txn(
                            Txn::new()
                                .when_mod_revision(&key, 0)
                                .put(&key, value.as_bytes()),
                        )
                        .await
                        .expect("child write");
                    assert!(outcome.succeeded, "{key} was fresh");
                    // Printed only after the acknowledgement, and flushed at once, so
                    // every line the parent reads names a write the store acknowledged.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {key} {value} {}", outcome.revision).expect("stdout");
                    out.flush().expect("stdout");
                    i += 1;
                }
            }));
        }
        for writer in writers {
            writer.await.expect("child writer");
        }
    });
}

/// Runs the child until it has acknowledged `acks_before_kill` writes, SIGKILLs it mid
/// burst, and returns every acknowledgement it printed: key → (value, revision).
fn run_child_and_kill(
    db: &std::path::Path,
    acks_before_kill: usize,
) -> HashMap<String, (String, i64)> {
    let exe = std::env::current_exe().expect("current test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "durability_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB_ENV, db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut acks = HashMap::new();
    let parse = |line: &str, acks: &mut HashMap<String, (String, i64)>| {
        let mut fields = line.split(' ');
        if fields.next() != Some("ACK") {
            return;
        }
        let (Some(key), Some(value), Some(revision)) =
            (fields.next(), fields.next(), fields.next())
        else {
            // The child was killed in the middle of writing this line: the write was
            // acknowledged, but the line is cut, so there is nothing reliable to check.
            return;
        };
        let Ok(revision) = revision.parse() else {
            return;
        };
        acks.insert(key.to_owned(), (value.to_owned(), revision));
    };
    while acks.len() < acks_before_kill {
        match lines.next() {
            Some(line) => parse(&line.expect("read child stdout"), &mut acks),
            None => panic!("the child exited after {} acknowledgements", acks.len()),
        }
    }
    // std's kill sends SIGKILL: no destructor, no final commit, no flush.
    child.kill().expect("SIGKILL the child");
    // Lines already in the pipe were acknowledged before the kill; they count too.
    for line in lines {
        match line {
            Ok(line) => parse(&line, &mut acks),
            Err(_) => break,
        }
    }
    let status = child.wait().expect("reap child");
    assert_eq!(
        status.signal(),
        Some(9),
        "the child died of SIGKILL: {status:?}"
    );
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("store.db");
    let mut all_acks = HashMap::new();
    // Twice: the second child starts from a database recovered after a kill.
    for round in 0..2 {
        let acks = tokio::task::spawn_blocking({
            let db = db.clone();
            move || run_child_and_kill(&db, 400)
        })
        .await
        .expect("child round");
        assert!(acks.len() >= 400, "round {round}: {} acks", acks.len());
        println!(
            "round {round}: {} acknowledged writes before and around SIGKILL",
            acks.len()
        );
        all_acks.extend(acks);

        let store = SqliteStore::open(&db, Durability::Full).expect("reopen after SIGKILL");
        let highest = all_acks
            .values()
            .map(|(_, revision)| *revision)
            .max()
            .unwrap_or(0);
        assert!(store.revision().await.expect("revision") >= highest);
        for (key, (value, revision)) in &all_acks {
            let kv = store
                .get(key)
                .await
                .expect("read")
                .unwrap_or_else(|| panic!("acknowledged key {key} was lost"));
            assert_eq!(kv.value, value.as_bytes(), "value of {key}");
            assert_eq!(kv.mod_revision, *revision, "revision of {key}");
        }
    }
}

/// Measures durable transaction throughput. Run with
/// `cargo test -p wharf-store --release --test durability -- --ignored --nocapture`;
/// set `WHARF_STORE_BENCH_DIR` to measure a particular disk (the default is the
/// system temporary directory, which must not be a tmpfs for the figure to mean
/// anything).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn txn_throughput_with_full_durability() {
    let base = std::env::var_os("WHARF_STORE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    for writers in [1usize, 32] {
        let dir = tempfile::tempdir_in(&base).expect("temp dir");
        let store = Arc::new(
            SqliteStore::open(dir.path().join("bench.db"), Durability::Full).expect("open"),
        );
        let duration = Duration::from_secs(3);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for writer in 0..writers {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let mut done = 0u64;
                while started.elapsed() < duration {
                    let key = format!("bench/{writer}/{}", done % 100);
                    store
                        .txn(Txn::new().put(key, vec![b'x'; 200]))
                        .await
                        .expect("bench write");
                    done += 1;
                }
                done
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await.expect("bench writer");
        }
        let elapsed = started.elapsed().as_secs_f64();
        println!(
            "Durability::Full, {writers:>2} concurrent writer(s): {total} txns in {elapsed:.2}s = {:.0} txn/s",
            total as f64 / elapsed
        );
    }
}
