//! The registry served on a real TCP port and driven by real clients: skopeo (from a
//! `docker save` archive to the registry, back into an OCI layout, and from that layout
//! to a second repository) and the Docker CLI (push, rmi, pull).
//!
//! Needs the Docker engine with the image `wharf-test/busybox:latest`
//! (`scripts/build-test-images`); skopeo is installed with apt-get when missing. A
//! missing prerequisite fails the test with the reason; it is never skipped silently.

mod common;

use std::process::Command;
use std::sync::Arc;
use wharf_registry::{registry_router, AllowAll, FsBlobStore, RegistryState};
use wharf_store::sqlite::SqliteStore;

const TEST_IMAGE: &str = "wharf-test/busybox:latest";

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// skopeo, installed from Debian when missing.
fn ensure_skopeo() {
    if have("skopeo") {
        return;
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "skopeo"])
        .status();
    assert!(
        status.is_ok_and(|s| s.success()) && have("skopeo"),
        "skopeo is not installed and `apt-get install -y skopeo` failed; install it to run this test"
    );
}

fn ensure_test_image() {
    assert!(have("docker"), "the docker CLI is required for this test");
    let out = Command::new("docker")
        .args(["image", "inspect", TEST_IMAGE])
        .output()
        .expect("docker runs");
    assert!(
        out.status.success(),
        "{TEST_IMAGE} is missing: run scripts/build-test-images first"
    );
}

/// Serves a fresh registry on 127.0.0.1:<free port>; returns the address.
async fn serve(dir: &std::path::Path) -> String {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    let blobs = Arc::new(FsBlobStore::new(dir).unwrap());
    let router = registry_router(RegistryState::new(store, blobs, Arc::new(AllowAll)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("127.0.0.1:{}", addr.port())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_both_ways() {
    blocking(|| {
        ensure_skopeo();
        ensure_test_image();
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let addr = serve(&dir.path().join("registry")).await;
    let work = dir.path().to_path_buf();
    blocking(move || {
        let archive = work.join("busybox.tar");
        run(
            "docker",
            &["save", TEST_IMAGE, "-o", archive.to_str().unwrap()],
        );
        let dest = format!("docker://{addr}/team/web:1");
        run(
            "skopeo",
            &[
                "copy",
                "--dest-tls-verify=false",
                &format!("docker-archive:{}", archive.display()),
                &dest,
            ],
        );
        // Back out into an OCI layout on disk.
        let layout = work.join("layout");
        run(
            "skopeo",
            &[
                "copy",
                "--src-tls-verify=false",
                &dest,
                &format!("oci:{}:1", layout.display()),
            ],
        );
        assert!(layout.join("index.json").exists());
        // And from that layout (OCI media types) into a second repository.
        let second = format!("docker://{addr}/team/copy:2");
        run(
            "skopeo",
            &[
                "copy",
                "--dest-tls-verify=false",
                &format!("oci:{}:1", layout.display()),
                &second,
            ],
        );
        let inspect = run("skopeo", &["inspect", "--tls-verify=false", &second]);
        let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        assert!(!v["Layers"].as_array().unwrap().is_empty());
        let tags = run(
            "skopeo",
            &[
                "list-tags",
                "--tls-verify=false",
                &format!("docker://{addr}/team/web"),
            ],
        );
        assert!(tags.contains("\"1\""), "{tags}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_push_rmi_pull() {
    blocking(ensure_test_image).await;
    let dir = tempfile::tempdir().unwrap();
    let addr = serve(dir.path()).await;
    blocking(move || {
        let image = format!("{addr}/team/docker:1");
        run("docker", &["tag", TEST_IMAGE, &image]);
        let result = std::panic::catch_unwind(|| {
            run("docker", &["push", &image]);
            run("docker", &["rmi", &image]);
            run("docker", &["pull", &image]);
            let id = run("docker", &["image", "inspect", "-f", "{{.Id}}", &image]);
            let original = run("docker", &["image", "inspect", "-f", "{{.Id}}", TEST_IMAGE]);
            assert_eq!(id.trim(), original.trim());
        });
        // Untag whatever this test tagged, whether or not it passed.
        let _ = Command::new("docker").args(["rmi", &image]).output();
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    })
    .await;
}
