//! In-process tests of every endpoint and error code of the distribution API.

mod common;

use async_trait::async_trait;
use base64::Engine as _;
use common::*;
use http::StatusCode;
use std::sync::Arc;
use wharf_registry::{BasicTokens, TokenVerifier};

#[tokio::test]
async fn base_endpoint_and_unknown_paths() {
    let reg = registry();
    let r = reg.send("GET", "/v2/", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("docker-distribution-api-version"), "registry/2.0");
    let r = reg.send("GET", "/v3/x", &[], vec![]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.header("docker-distribution-api-version"), "registry/2.0");
    let r = reg
        .send("POST", "/v2/team/web/tags/list", &[], vec![])
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED")
    );
}

#[tokio::test]
async fn monolithic_push_then_head_get_and_ranges() {
    let reg = registry();
    let data = b"0123456789".to_vec();
    let digest = reg.push_blob("team/web", &data).await;
    let r = reg
        .send("HEAD", &format!("/v2/team/web/blobs/{digest}"), &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), "10");
    assert_eq!(r.header("docker-content-digest"), digest);
    assert!(r.body.is_empty());
    let r = reg
        .send("GET", &format!("/v2/team/web/blobs/{digest}"), &[], vec![])
        .await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (StatusCode::OK, data.as_slice())
    );
    let r = reg
        .send(
            "GET",
            &format!("/v2/team/web/blobs/{digest}"),
            &[("range", "bytes=2-5")],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.body, b"2345");
    assert_eq!(r.header("content-range"), "bytes 2-5/10");
    let r = reg
        .send(
            "GET",
            &format!("/v2/team/web/blobs/{digest}"),
            &[("range", "bytes=-3")],
            vec![],
        )
        .await;
    assert_eq!(r.body, b"789");
    let r = reg
        .send(
            "GET",
            &format!("/v2/team/web/blobs/{digest}"),
            &[("range", "bytes=20-")],
            vec![],
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID")
    );
    assert_eq!(r.header("content-range"), "bytes */10");
    // The blob is not in another repository.
    let r = reg
        .send(
            "GET",
            &format!("/v2/team/other/blobs/{digest}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
    );
}

#[tokio::test]
async fn monolithic_push_with_wrong_digest_or_length_is_refused() {
    let reg = registry();
    let wrong = sha256(b"something else");
    let r = reg
        .send(
            "POST",
            &format!("/v2/team/web/blobs/uploads/?digest={wrong}"),
            &[],
            b"data".to_vec(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let r = reg
        .send("HEAD", &format!("/v2/team/web/blobs/{wrong}"), &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = reg
        .send(
            "POST",
            "/v2/team/web/blobs/uploads/?digest=sha256:nothex",
            &[],
            b"data".to_vec(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let r = reg
        .send("GET", "/v2/team/web/blobs/md5:abc", &[], vec![])
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
}

#[tokio::test]
async fn sha512_blobs() {
    let reg = registry();
    let data = b"sha512 content";
    let digest = wharf_registry::Digest::of(wharf_registry::Algorithm::Sha512, data).to_string();
    let r = reg
        .send(
            "POST",
            &format!("/v2/team/web/blobs/uploads/?digest={digest}"),
            &[],
            data.to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = reg
        .send("GET", &format!("/v2/team/web/blobs/{digest}"), &[], vec![])
        .await;
    assert_eq!(r.body, data);
    assert!(reg
        .dir
        .path()
        .join("blobs/sha512")
        .join(&digest[7..9])
        .join(&digest[7..])
        .exists());
}

#[tokio::test]
async fn chunked_upload_with_status_out_of_order_and_finish() {
    let reg = registry();
    let r = reg
        .send("POST", "/v2/team/web/blobs/uploads/", &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let location = r.header("location").to_string();
    let uuid = r.header("docker-upload-uuid").to_string();
    assert!(location.ends_with(&uuid));
    assert_eq!(r.header("range"), "0-0");

    let r = reg
        .send(
            "PATCH",
            &location,
            &[
                ("content-range", "0-4"),
                ("content-type", "application/octet-stream"),
            ],
            b"hello".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.header("range"), "0-4");
    // A chunk that does not start where the upload ends.
    let r = reg
        .send(
            "PATCH",
            &location,
            &[("content-range", "7-9")],
            b"abc".to_vec(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::RANGE_NOT_SATISFIABLE, "RANGE_INVALID")
    );
    assert_eq!(r.header("range"), "0-4");
    // A Content-Range that does not match the body's length.
    let r = reg
        .send(
            "PATCH",
            &location,
            &[("content-range", "5-9")],
            b"ab".to_vec(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "SIZE_INVALID")
    );
    // A streamed chunk (no Content-Range).
    let r = reg.send("PATCH", &location, &[], b" wor".to_vec()).await;
    assert_eq!(r.header("range"), "0-8");
    let r = reg.send("GET", &location, &[], vec![]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("range"), "0-8");
    assert_eq!(r.header("docker-upload-uuid"), uuid);

    let full = b"hello world";
    let digest = sha256(full);
    // Missing and wrong digests keep the session.
    let r = reg.send("PUT", &location, &[], vec![]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let r = reg
        .send(
            "PUT",
            &format!("{location}?digest={}", sha256(b"x")),
            &[("content-range", "9-10")],
            b"ld".to_vec(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let r = reg
        .send("PUT", &format!("{location}?digest={digest}"), &[], vec![])
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("location"), format!("/v2/team/web/blobs/{digest}"));
    assert_eq!(r.header("docker-content-digest"), digest);
    let r = reg
        .send("GET", &format!("/v2/team/web/blobs/{digest}"), &[], vec![])
        .await;
    assert_eq!(r.body, full);
    // The session is gone.
    let r = reg.send("GET", &location, &[], vec![]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN")
    );
}

#[tokio::test]
async fn post_then_put_with_whole_body_and_cancel() {
    let reg = registry();
    let r = reg
        .send("POST", "/v2/team/web/blobs/uploads/", &[], vec![])
        .await;
    let location = r.header("location").to_string();
    let digest = sha256(b"whole");
    let r = reg
        .send(
            "PUT",
            &format!("{location}?digest={digest}"),
            &[],
            b"whole".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    let r = reg
        .send("POST", "/v2/team/web/blobs/uploads/", &[], vec![])
        .await;
    let location = r.header("location").to_string();
    let r = reg.send("DELETE", &location, &[], vec![]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = reg.send("PATCH", &location, &[], b"x".to_vec()).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN")
    );
    let r = reg.send("DELETE", &location, &[], vec![]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = reg
        .send("GET", "/v2/team/web/blobs/uploads/not-a-uuid", &[], vec![])
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN")
    );
    // A session belongs to the repository it was started in.
    let r = reg
        .send("POST", "/v2/team/web/blobs/uploads/", &[], vec![])
        .await;
    let uuid = r.header("docker-upload-uuid").to_string();
    let r = reg
        .send(
            "GET",
            &format!("/v2/team/other/blobs/uploads/{uuid}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cross_repository_mount() {
    let reg = registry();
    let digest = reg.push_blob("team/base", b"shared layer").await;
    let r = reg
        .send(
            "POST",
            &format!("/v2/team/web/blobs/uploads/?mount={digest}&from=team/base"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("location"), format!("/v2/team/web/blobs/{digest}"));
    let r = reg
        .send("HEAD", &format!("/v2/team/web/blobs/{digest}"), &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Unknown source blob: an ordinary upload session starts instead.
    let other = sha256(b"absent");
    let r = reg
        .send(
            "POST",
            &format!("/v2/team/web/blobs/uploads/?mount={other}&from=team/base"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(r.headers.contains_key("docker-upload-uuid"));
}

#[tokio::test]
async fn manifests_by_tag_and_digest_head_and_errors() {
    let reg = registry();
    let (body, digest) = reg.push_image("team/web", "1", "a").await;
    assert_eq!(digest, sha256(&body));
    for reference in ["1", digest.as_str()] {
        let r = reg
            .send(
                "GET",
                &format!("/v2/team/web/manifests/{reference}"),
                &[],
                vec![],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, body);
        assert_eq!(r.header("content-type"), OCI_MANIFEST);
        assert_eq!(r.header("docker-content-digest"), digest);
        let r = reg
            .send(
                "HEAD",
                &format!("/v2/team/web/manifests/{reference}"),
                &[],
                vec![],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-length"), body.len().to_string());
        assert!(r.body.is_empty());
    }
    let r = reg
        .send("GET", "/v2/team/web/manifests/2", &[], vec![])
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
    );

    // Missing blobs.
    let config = reg.push_blob("team/web", b"cfg").await;
    let missing = image_manifest(&config, &[&sha256(b"not pushed")], None);
    let r = reg
        .send(
            "PUT",
            "/v2/team/web/manifests/2",
            &[("content-type", OCI_MANIFEST)],
            missing,
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN")
    );
    // Blobs of another repository do not count.
    let other_layer = reg.push_blob("team/other", b"other layer").await;
    let r = reg
        .send(
            "PUT",
            "/v2/team/web/manifests/2",
            &[("content-type", OCI_MANIFEST)],
            image_manifest(&config, &[&other_layer], None),
        )
        .await;
    assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN");
    // Invalid manifests.
    for (body, ct) in [
        (b"not json".to_vec(), OCI_MANIFEST),
        (br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#.to_vec(), OCI_MANIFEST),
        (br#"{"schemaVersion":1}"#.to_vec(), "application/vnd.docker.distribution.manifest.v1+json"),
    ] {
        let r = reg.send("PUT", "/v2/team/web/manifests/2", &[("content-type", ct)], body).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "MANIFEST_INVALID"));
    }
    // Invalid tag, digest mismatch, too large.
    let r = reg
        .send(
            "PUT",
            "/v2/team/web/manifests/-bad",
            &[("content-type", OCI_MANIFEST)],
            body.clone(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "TAG_INVALID")
    );
    let r = reg
        .send(
            "PUT",
            &format!("/v2/team/web/manifests/{}", sha256(b"x")),
            &[("content-type", OCI_MANIFEST)],
            body.clone(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let huge = vec![b' '; 4 * 1024 * 1024 + 1];
    let r = reg
        .send(
            "PUT",
            "/v2/team/web/manifests/big",
            &[("content-type", OCI_MANIFEST)],
            huge,
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID")
    );
    // A push by a sha512 digest.
    let d512 = wharf_registry::Digest::of(wharf_registry::Algorithm::Sha512, &body).to_string();
    let r = reg
        .send(
            "PUT",
            &format!("/v2/team/web/manifests/{d512}"),
            &[("content-type", OCI_MANIFEST)],
            body.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("docker-content-digest"), d512);
}

#[tokio::test]
async fn index_and_docker_manifest_list() {
    let reg = registry();
    let (_, child) = reg
        .push_image(
            "team/web",
            &sha256(b"unused-tag-free").replace("sha256:", "t"),
            "c",
        )
        .await;
    for media_type in [
        OCI_INDEX,
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ] {
        let index = serde_json::json!({
            "schemaVersion": 2, "mediaType": media_type,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": 1,
                           "platform": {"architecture": "amd64", "os": "linux"}}],
        });
        let r = reg
            .send(
                "PUT",
                "/v2/team/web/manifests/multi",
                &[("content-type", media_type)],
                index.to_string(),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        let r = reg
            .send("GET", "/v2/team/web/manifests/multi", &[], vec![])
            .await;
        assert_eq!(r.header("content-type"), media_type);
        let dangling = serde_json::json!({
            "schemaVersion": 2, "mediaType": media_type,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(b"nope"), "size": 1}],
        });
        let r = reg
            .send(
                "PUT",
                "/v2/team/web/manifests/multi2",
                &[("content-type", media_type)],
                dangling.to_string(),
            )
            .await;
        assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN");
    }
    // A Docker schema 2 image manifest.
    let config = reg.push_blob("team/web", b"docker cfg").await;
    let layer = reg.push_blob("team/web", b"docker layer").await;
    let dm = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config, "size": 10},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer, "size": 12}],
    });
    let r = reg
        .send(
            "PUT",
            "/v2/team/web/manifests/docker",
            &[(
                "content-type",
                "application/vnd.docker.distribution.manifest.v2+json",
            )],
            dm.to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn deletes_of_manifests_tags_and_blobs() {
    let reg = registry();
    let (_, digest) = reg.push_image("team/web", "1", "a").await;
    let r = reg
        .send(
            "PUT",
            "/v2/team/web/manifests/also",
            &[("content-type", OCI_MANIFEST)],
            reg.send("GET", "/v2/team/web/manifests/1", &[], vec![])
                .await
                .body,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Delete a tag: the manifest stays.
    let r = reg
        .send("DELETE", "/v2/team/web/manifests/also", &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        reg.send("GET", "/v2/team/web/manifests/also", &[], vec![])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        reg.send(
            "GET",
            &format!("/v2/team/web/manifests/{digest}"),
            &[],
            vec![]
        )
        .await
        .status,
        StatusCode::OK
    );
    // Delete by digest: its tags go too.
    let r = reg
        .send(
            "DELETE",
            &format!("/v2/team/web/manifests/{digest}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        reg.send("GET", "/v2/team/web/manifests/1", &[], vec![])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let r = reg
        .send(
            "DELETE",
            &format!("/v2/team/web/manifests/{digest}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
    );
    // Blobs.
    let blob = reg.push_blob("team/web", b"to delete").await;
    let r = reg
        .send("DELETE", &format!("/v2/team/web/blobs/{blob}"), &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = reg
        .send("GET", &format!("/v2/team/web/blobs/{blob}"), &[], vec![])
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
    );
    let r = reg
        .send("DELETE", &format!("/v2/team/web/blobs/{blob}"), &[], vec![])
        .await;
    assert_eq!(r.code(), "BLOB_UNKNOWN");
}

#[tokio::test]
async fn tags_list_and_catalog_paginate() {
    let reg = registry();
    let r = reg.send("GET", "/v2/team/web/tags/list", &[], vec![]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
    );
    let (body, _) = reg.push_image("team/web", "a", "x").await;
    for tag in ["c", "b", "d"] {
        let r = reg
            .send(
                "PUT",
                &format!("/v2/team/web/manifests/{tag}"),
                &[("content-type", OCI_MANIFEST)],
                body.clone(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let r = reg.send("GET", "/v2/team/web/tags/list", &[], vec![]).await;
    assert_eq!(
        r.json(),
        serde_json::json!({"name": "team/web", "tags": ["a", "b", "c", "d"]})
    );
    assert!(!r.headers.contains_key("link"));
    let r = reg
        .send("GET", "/v2/team/web/tags/list?n=2", &[], vec![])
        .await;
    assert_eq!(r.json()["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(
        r.header("link"),
        "</v2/team/web/tags/list?n=2&last=b>; rel=\"next\""
    );
    let r = reg
        .send("GET", "/v2/team/web/tags/list?n=2&last=b", &[], vec![])
        .await;
    assert_eq!(r.json()["tags"], serde_json::json!(["c", "d"]));
    assert!(!r.headers.contains_key("link"));
    let r = reg
        .send("GET", "/v2/team/web/tags/list?n=0", &[], vec![])
        .await;
    assert_eq!(r.json()["tags"], serde_json::json!([]));

    reg.push_blob("team/api", b"x").await;
    reg.push_blob("base/alpine", b"x").await;
    let r = reg.send("GET", "/v2/_catalog", &[], vec![]).await;
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["base/alpine", "team/api", "team/web"])
    );
    let r = reg
        .send("GET", "/v2/_catalog?n=1&last=base/alpine", &[], vec![])
        .await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["team/api"]));
    assert_eq!(
        r.header("link"),
        "</v2/_catalog?n=1&last=team%2Fapi>; rel=\"next\""
    );
}

#[tokio::test]
async fn referrers_with_subject_and_filter() {
    let reg = registry();
    let (_, subject) = reg.push_image("team/web", "1", "a").await;
    let r = reg
        .send(
            "GET",
            &format!("/v2/team/web/referrers/{subject}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), OCI_INDEX);
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    let config = reg.push_blob("team/web", b"{}").await;
    let mut digests = Vec::new();
    for artifact in [
        "application/vnd.example.sig",
        "application/vnd.example.sbom",
    ] {
        let m = image_manifest(&config, &[], Some((&subject, artifact)));
        let r = reg
            .send(
                "PUT",
                &format!("/v2/team/web/manifests/{}", sha256(&m)),
                &[("content-type", OCI_MANIFEST)],
                m.clone(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.header("oci-subject"), subject);
        digests.push(sha256(&m));
    }
    let r = reg
        .send(
            "GET",
            &format!("/v2/team/web/referrers/{subject}"),
            &[],
            vec![],
        )
        .await;
    let manifests = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(manifests.len(), 2);
    assert!(manifests
        .iter()
        .all(|m| m["annotations"]["org.example"] == "yes"));
    let r = reg
        .send(
            "GET",
            &format!("/v2/team/web/referrers/{subject}?artifactType=application/vnd.example.sbom"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.header("oci-filters-applied"), "artifactType");
    let manifests = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["digest"], digests[1].as_str());
    assert_eq!(manifests[0]["artifactType"], "application/vnd.example.sbom");
    // Deleting a referrer removes it from the index.
    reg.send(
        "DELETE",
        &format!("/v2/team/web/manifests/{}", digests[0]),
        &[],
        vec![],
    )
    .await;
    let r = reg
        .send(
            "GET",
            &format!("/v2/team/web/referrers/{subject}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.json()["manifests"].as_array().unwrap().len(), 1);
    let r = reg
        .send("GET", "/v2/team/web/referrers/sha256:bad", &[], vec![])
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    // A subject nobody refers to, in an unknown repository: an empty index.
    let r = reg
        .send(
            "GET",
            &format!("/v2/team/none/referrers/{}", sha256(b"z")),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn invalid_repository_names() {
    let reg = registry();
    for path in [
        "/v2/Team/web/tags/list",
        "/v2/team//web/tags/list",
        "/v2/team/../web/manifests/1",
        "/v2/a/blobs/uploads/",
        "/v2/team/web-/manifests/1",
    ] {
        let r = reg.send("GET", path, &[], vec![]).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_REQUEST, "NAME_INVALID"),
            "{path}"
        );
    }
}

struct OneToken;
#[async_trait]
impl TokenVerifier for OneToken {
    async fn verify(&self, password: &str) -> bool {
        password == "token123"
    }
}

#[tokio::test]
async fn basic_token_auth_challenges() {
    let reg = registry_with(Arc::new(BasicTokens::new(Arc::new(OneToken), "wharf")));
    let r = reg.send("GET", "/v2/", &[], vec![]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
    assert_eq!(r.header("www-authenticate"), "Basic realm=\"wharf\"");
    let bad = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("AWS:nope")
    );
    let r = reg
        .send(
            "GET",
            "/v2/team/web/tags/list",
            &[("authorization", &bad)],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("AWS:token123")
    );
    let r = reg
        .send("GET", "/v2/", &[("authorization", &good)], vec![])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let data = b"authed";
    let r = reg
        .send(
            "POST",
            &format!("/v2/team/web/blobs/uploads/?digest={}", sha256(data)),
            &[("authorization", &good)],
            data.to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}
