//! Online garbage collection against the OCI router over a real SQLite store and blob
//! directory: orphans are reclaimed, referenced blobs never are, and collections racing
//! pushes (monolithic, chunked, existence checks then references) never break a push
//! nor leave a manifest pointing at a missing blob.

mod common;

use common::{image_manifest, sha256, TestRegistry, OCI_MANIFEST};
use http::StatusCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use wharf_registry::gc::GarbageCollector;
use wharf_registry::metadata::{Metadata, RepositoryCreation};
use wharf_registry::{registry_router, AllowAll, BlobStore, Digest, FsBlobStore, RegistryState};
use wharf_store::sqlite::{Durability, SqliteStore};
use wharf_store::Store;

const HOUR: i64 = 3600 * 1000;
const START_MILLIS: i64 = 1_700_000_000_000;

struct Harness {
    oci: Arc<TestRegistry>,
    meta: Metadata,
    blobs: Arc<FsBlobStore>,
    now: Arc<AtomicI64>,
    gc: Arc<GarbageCollector>,
    _db: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let db = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(db.path().join("state.db"), Durability::Full).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(FsBlobStore::new(dir.path()).unwrap());
        let now = Arc::new(AtomicI64::new(START_MILLIS));
        let clock_now = now.clone();
        let meta = Metadata::with_options(
            store,
            RepositoryCreation::OnPush,
            Arc::new(move || clock_now.load(Ordering::SeqCst)),
        );
        let router = registry_router(RegistryState::with_metadata(
            meta.clone(),
            blobs.clone(),
            Arc::new(AllowAll),
        ));
        let gc = Arc::new(GarbageCollector::new(meta.clone(), blobs.clone(), HOUR));
        Harness {
            oci: Arc::new(TestRegistry { router, dir }),
            meta,
            blobs,
            now,
            gc,
            _db: db,
        }
    }

    async fn stored(&self, digest: &str) -> bool {
        let d: Digest = digest.parse().unwrap();
        self.blobs.stat(&d).await.unwrap().is_some()
    }

    /// Every manifest of every repository has its body and every blob it references,
    /// both linked in its repository and stored.
    async fn assert_no_dangling_manifest(&self) {
        for repo in self.meta.repositories().await.unwrap() {
            for (digest, record) in self.meta.manifests(&repo).await.unwrap() {
                assert!(
                    self.blobs.stat(&digest).await.unwrap().is_some(),
                    "{repo}@{digest} has no body"
                );
                for r in record.references.unwrap() {
                    let d: Digest = r.parse().unwrap();
                    let linked = self.meta.blob_link(&repo, &d).await.unwrap().is_some()
                        || self.meta.manifest(&repo, &d).await.unwrap().is_some();
                    assert!(
                        linked,
                        "{repo}@{digest} references {d}, which is not in {repo}"
                    );
                    assert!(
                        self.blobs.stat(&d).await.unwrap().is_some(),
                        "{repo}@{digest} references {d}, which is gone"
                    );
                }
            }
        }
    }
}

/// Pushes like docker does: each blob is checked with HEAD and uploaded only when
/// missing (monolithically, or in two chunks), then the manifest is PUT.
async fn push_like_docker(
    oci: &TestRegistry,
    repo: &str,
    tag: &str,
    blobs: &[Vec<u8>],
    chunked: bool,
) -> Result<(), String> {
    let mut digests = Vec::new();
    for bytes in blobs {
        let digest = sha256(bytes);
        let head = oci
            .send("HEAD", &format!("/v2/{repo}/blobs/{digest}"), &[], vec![])
            .await;
        if head.status != StatusCode::OK {
            if chunked && bytes.len() > 1 {
                let start = oci
                    .send("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], vec![])
                    .await;
                if start.status != StatusCode::ACCEPTED {
                    return Err(format!("upload start: {}", start.status));
                }
                let location = start.header("location").to_string();
                let (a, b) = bytes.split_at(bytes.len() / 2);
                let range = format!("0-{}", a.len() - 1);
                let patch = oci
                    .send("PATCH", &location, &[("content-range", &range)], a.to_vec())
                    .await;
                if patch.status != StatusCode::ACCEPTED {
                    return Err(format!(
                        "patch: {} {}",
                        patch.status,
                        String::from_utf8_lossy(&patch.body)
                    ));
                }
                let put = oci
                    .send(
                        "PUT",
                        &format!("{location}?digest={digest}"),
                        &[],
                        b.to_vec(),
                    )
                    .await;
                if put.status != StatusCode::CREATED {
                    return Err(format!(
                        "upload finish: {} {}",
                        put.status,
                        String::from_utf8_lossy(&put.body)
                    ));
                }
            } else {
                let r = oci
                    .send(
                        "POST",
                        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                        &[],
                        bytes.clone(),
                    )
                    .await;
                if r.status != StatusCode::CREATED {
                    return Err(format!(
                        "monolithic upload: {} {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    ));
                }
            }
        }
        digests.push(digest);
    }
    let layers: Vec<&str> = digests[1..].iter().map(String::as_str).collect();
    let manifest = image_manifest(&digests[0], &layers, None);
    let r = oci
        .send(
            "PUT",
            &format!("/v2/{repo}/manifests/{tag}"),
            &[("content-type", OCI_MANIFEST)],
            manifest,
        )
        .await;
    if r.status != StatusCode::CREATED {
        return Err(format!(
            "manifest put: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ));
    }
    Ok(())
}

#[tokio::test]
async fn collection_reclaims_orphans_and_keeps_what_manifests_reference() {
    let h = Harness::new();
    let (_, manifest) = h.oci.push_image("team/app", "v1", "kept").await;
    let orphan = h.oci.push_blob("team/app", b"nobody references me").await;
    let shared = h.oci.push_blob("team/other", b"layer kept").await;
    // Within the grace period nothing goes.
    let report = h.gc.run().await.unwrap();
    assert_eq!(report.blobs_deleted, 0);
    assert!(report.spared_recent >= 1);
    assert!(h.stored(&orphan).await);

    h.now.fetch_add(2 * HOUR, Ordering::SeqCst);
    let report = h.gc.run().await.unwrap();
    assert_eq!(report.blobs_deleted, 1, "{report:?}");
    assert_eq!(report.bytes_freed, b"nobody references me".len() as u64);
    assert_eq!(report.links_removed, 1);
    assert!(!h.stored(&orphan).await);
    let head = h
        .oci
        .send("HEAD", &format!("/v2/team/app/blobs/{orphan}"), &[], vec![])
        .await;
    assert_eq!(head.status, StatusCode::NOT_FOUND);
    // The image is whole; its layer, also linked in another repository where nothing
    // references it, stays: a manifest somewhere references it.
    let r = h
        .oci
        .send("GET", "/v2/team/app/manifests/v1", &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(h.stored(&manifest).await && h.stored(&shared).await);
    h.assert_no_dangling_manifest().await;

    // Deleting the manifest makes its blobs garbage once the grace period passed.
    let r = h
        .oci
        .send(
            "DELETE",
            &format!("/v2/team/app/manifests/{manifest}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    h.now.fetch_add(2 * HOUR, Ordering::SeqCst);
    let report = h.gc.run().await.unwrap();
    assert_eq!(report.blobs_deleted, 3, "{report:?}"); // config, layer, manifest body
    assert!(!h.stored(&manifest).await && !h.stored(&shared).await);
    // Nothing left: a second run finds nothing.
    assert_eq!(h.gc.run().await.unwrap().blobs_deleted, 0);
    // The same bytes can be pushed again.
    push_like_docker(
        &h.oci,
        "team/app",
        "v1",
        &[b"{\"seed\":\"kept\"}".to_vec(), b"layer kept".to_vec()],
        false,
    )
    .await
    .unwrap();
    h.assert_no_dangling_manifest().await;
}

#[tokio::test]
async fn a_chunked_upload_in_flight_survives_collections() {
    let h = Harness::new();
    let config = h.oci.push_blob("team/app", b"{\"c\":1}").await;
    let start = h
        .oci
        .send("POST", "/v2/team/app/blobs/uploads/", &[], vec![])
        .await;
    let location = start.header("location").to_string();
    let layer = b"0123456789abcdefghij".to_vec();
    let digest = sha256(&layer);
    let r = h
        .oci
        .send(
            "PATCH",
            &location,
            &[("content-range", "0-9")],
            layer[..10].to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    // Hours pass and collections run while the upload is open: the config blob is
    // unreferenced and old, so it goes; the session's bytes are not touched.
    h.now.fetch_add(2 * HOUR, Ordering::SeqCst);
    let report = h.gc.run().await.unwrap();
    assert_eq!(report.blobs_deleted, 1);
    let r = h
        .oci
        .send(
            "PATCH",
            &location,
            &[("content-range", "10-19")],
            layer[10..].to_vec(),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    h.gc.run().await.unwrap();
    let r = h
        .oci
        .send("PUT", &format!("{location}?digest={digest}"), &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    h.gc.run().await.unwrap();
    // The config went, so the manifest is refused until it is pushed again.
    let manifest = image_manifest(&config, &[&digest], None);
    let r = h
        .oci
        .send(
            "PUT",
            "/v2/team/app/manifests/v1",
            &[("content-type", OCI_MANIFEST)],
            manifest.clone(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN")
    );
    h.oci.push_blob("team/app", b"{\"c\":1}").await;
    h.gc.run().await.unwrap();
    let r = h
        .oci
        .send(
            "PUT",
            "/v2/team/app/manifests/v1",
            &[("content-type", OCI_MANIFEST)],
            manifest,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    h.now.fetch_add(2 * HOUR, Ordering::SeqCst);
    assert_eq!(h.gc.run().await.unwrap().blobs_deleted, 0);
    let r = h
        .oci
        .send("GET", &format!("/v2/team/app/blobs/{digest}"), &[], vec![])
        .await;
    assert_eq!((r.status, r.body), (StatusCode::OK, layer));
    h.assert_no_dangling_manifest().await;
}

/// Many rounds of: old orphans (some of which the pushes reuse, found by HEAD or
/// uploaded again), hours later many concurrent pushes while collections run in a
/// loop. No push fails, no manifest dangles, unused orphans are reclaimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collections_racing_concurrent_pushes_never_break_one() {
    const ROUNDS: usize = 12;
    const PUSHERS: usize = 8;
    let h = Harness::new();
    let (mut total_deleted_during_pushes, mut total_lost_races) = (0, 0);
    for round in 0..ROUNDS {
        // Orphans from long ago, in the repositories the pushers use.
        let mut orphans = Vec::new();
        for i in 0..PUSHERS {
            let bytes = format!("round {round} shared orphan {i}").into_bytes();
            h.oci.push_blob(&format!("race/r{i}"), &bytes).await;
            orphans.push(bytes);
        }
        let unused = h
            .oci
            .push_blob("race/r0", format!("round {round} unused").as_bytes())
            .await;
        h.now.fetch_add(2 * HOUR, Ordering::SeqCst);

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let collector = {
            let gc = h.gc.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut runs, mut deleted, mut lost) = (0, 0, 0);
                while !stop.load(Ordering::SeqCst) {
                    let report = gc.run().await.unwrap();
                    runs += 1;
                    deleted += report.blobs_deleted;
                    lost += report.lost_races;
                    tokio::task::yield_now().await;
                }
                (runs, deleted, lost)
            })
        };
        let mut pushers = Vec::new();
        for (i, orphan) in orphans.iter().enumerate() {
            let oci = h.oci.clone();
            // Each pusher reuses the old orphan of its repository (found by HEAD, or
            // uploaded again if a collection took it first) and adds fresh blobs.
            let reused = orphan.clone();
            pushers.push(tokio::spawn(async move {
                let repo = format!("race/r{i}");
                for k in 0..3 {
                    let blobs = vec![
                        format!("{{\"round\":{round},\"pusher\":{i},\"k\":{k}}}").into_bytes(),
                        reused.clone(),
                        format!("round {round} pusher {i} layer {k} ")
                            .repeat(50)
                            .into_bytes(),
                        b"common layer of every image".to_vec(),
                    ];
                    push_like_docker(
                        &oci,
                        &repo,
                        &format!("r{round}-k{k}"),
                        &blobs,
                        (i + k) % 2 == 0,
                    )
                    .await?;
                }
                Ok::<(), String>(())
            }));
        }
        for p in pushers {
            p.await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: a push failed: {e}"));
        }
        stop.store(true, Ordering::SeqCst);
        let (runs, deleted, lost) = collector.await.unwrap();
        assert!(runs >= 1);
        total_deleted_during_pushes += deleted;
        total_lost_races += lost;
        eprintln!("round {round}: {runs} collections during the pushes deleted {deleted} blobs, lost {lost} races");
        h.assert_no_dangling_manifest().await;
        // The orphan nobody reused is gone by now (or at the latest after one more run).
        h.gc.run().await.unwrap();
        assert!(
            !h.stored(&unused).await,
            "round {round}: the unused orphan survived"
        );
    }
    // The collections did run against the pushes, not just before or after them.
    assert!(
        total_deleted_during_pushes > 0,
        "no collection overlapped the pushes"
    );
    eprintln!("{total_deleted_during_pushes} blobs deleted and {total_lost_races} races lost during pushes");
    // Every image of every round is still pullable, blob by blob.
    for i in 0..PUSHERS {
        let repo = format!("race/r{i}");
        for round in 0..ROUNDS {
            let r = h
                .oci
                .send(
                    "GET",
                    &format!("/v2/{repo}/manifests/r{round}-k2"),
                    &[],
                    vec![],
                )
                .await;
            assert_eq!(r.status, StatusCode::OK);
            let doc: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            for layer in doc["layers"].as_array().unwrap() {
                let d = layer["digest"].as_str().unwrap();
                let b = h
                    .oci
                    .send("GET", &format!("/v2/{repo}/blobs/{d}"), &[], vec![])
                    .await;
                assert_eq!(b.status, StatusCode::OK);
            }
        }
    }
}

/// The guards a manifest PUT takes for collection must not make identical concurrent
/// pushes (the same image from many CI jobs at once) fail each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identical_concurrent_pushes_all_succeed() {
    let h = Harness::new();
    let blobs = vec![b"{\"same\":true}".to_vec(), b"the same layer".to_vec()];
    let mut pushes = Vec::new();
    for i in 0..24 {
        let oci = h.oci.clone();
        let blobs = blobs.clone();
        pushes.push(tokio::spawn(async move {
            let repo = if i % 2 == 0 { "same/a" } else { "same/b" };
            push_like_docker(&oci, repo, "latest", &blobs, i % 3 == 0).await
        }));
    }
    for p in pushes {
        p.await.unwrap().unwrap();
    }
    h.assert_no_dangling_manifest().await;
}

/// The interleaving the manifest PUT's guards exist for, forced step by step: the PUT
/// checked its blobs, then a collection condemned and deleted one of them, then the PUT
/// commits. It must be refused, not store a manifest pointing at nothing.
#[tokio::test]
async fn a_manifest_put_after_its_blob_was_collected_is_refused() {
    let h = Harness::new();
    let layer = h.oci.push_blob("team/app", b"old layer").await;
    let config = h.oci.push_blob("team/app", b"{}").await;
    h.now.fetch_add(2 * HOUR, Ordering::SeqCst);
    // The PUT's checks and its claim of its own body happen now…
    let body = image_manifest(&config, &[&layer], None);
    let digest: Digest = sha256(&body).parse().unwrap();
    h.meta.claim_blob(&config.parse().unwrap()).await.unwrap();
    h.meta.claim_blob(&digest).await.unwrap();
    // …then a collection takes the layer (old, unreferenced so far)…
    let report = h.gc.run().await.unwrap();
    assert_eq!(report.blobs_deleted, 1, "{report:?}");
    assert!(!h.stored(&layer).await);
    // …and the PUT's transaction comes last.
    let record = wharf_registry::metadata::ManifestRecord {
        media_type: OCI_MANIFEST.into(),
        size: body.len() as u64,
        subject: None,
        artifact_type: None,
        annotations: None,
        pushed_at: None,
        references: Some(vec![config.clone(), layer.clone()]),
    };
    let refused = h
        .meta
        .put_manifest("team/app", &digest, &record, Some("v1"))
        .await;
    assert!(
        matches!(
            refused,
            Err(wharf_registry::RegistryError::ManifestBlobUnknown(_))
        ),
        "{refused:?}"
    );
    assert!(h
        .meta
        .manifest("team/app", &digest)
        .await
        .unwrap()
        .is_none());
    h.assert_no_dangling_manifest().await;
}
