//! The Docker CLI against the ECR-wired registry on a real TCP port: a token from
//! GetAuthorizationToken, `docker login -u AWS --password-stdin`, push to a repository
//! made with CreateRepository, pull it back, and a refused push to a repository nobody
//! created.
//!
//! Needs the Docker engine with `wharf-test/busybox:latest` (`scripts/build-test-images`).
//! Docker's credentials go to a temporary `DOCKER_CONFIG`, never the user's.

use base64::Engine as _;
use serde_json::json;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use wharf_aws::{AwsService, CallContext, ServiceInput, ServiceOutput};
use wharf_registry::{build, RegistryConfig};
use wharf_store::sqlite::SqliteStore;

const TEST_IMAGE: &str = "wharf-test/busybox:latest";

fn docker(config: &std::path::Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("docker");
    cmd.env("DOCKER_CONFIG", config).args(args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("docker runs");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(config: &std::path::Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = docker(config, args, stdin);
    assert!(
        out.status.success(),
        "docker {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_login_push_pull_with_an_ecr_token() {
    let dir = tempfile::tempdir().unwrap();
    let docker_config = dir.path().join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    let inspect = docker(&docker_config, &["image", "inspect", TEST_IMAGE], None);
    assert!(
        inspect.status.success(),
        "{TEST_IMAGE} is missing: run scripts/build-test-images first"
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let registry = build(
        Arc::new(SqliteStore::open_in_memory().unwrap()),
        dir.path().join("blobs"),
        RegistryConfig {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            registry_addr: addr.clone(),
        },
    )
    .unwrap();
    let router = registry.router;
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let ctx = CallContext {
        request_id: "r".into(),
        region: "us-east-1".into(),
        access_key_id: "AKID".into(),
        account_id: "000000000000".into(),
    };
    let call = |op: &'static str, input: serde_json::Value| {
        let ecr = registry.ecr.clone();
        let ctx = ctx.clone();
        async move {
            match ecr.call(&ctx, op, ServiceInput::Json(input)).await {
                Ok(ServiceOutput::Json(v)) => v,
                other => panic!("{op}: {other:?}"),
            }
        }
    };
    call(
        "CreateRepository",
        json!({"repositoryName": "team/busybox"}),
    )
    .await;
    let token = call("GetAuthorizationToken", json!({})).await;
    let data = &token["authorizationData"][0];
    assert_eq!(data["proxyEndpoint"], format!("http://{addr}"));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(data["authorizationToken"].as_str().unwrap())
        .unwrap();
    let password = String::from_utf8(decoded).unwrap()["AWS:".len()..].to_string();

    let remote = format!("{addr}/team/busybox:latest");
    let uncreated = format!("{addr}/team/nobody:latest");
    let cfg = docker_config.clone();
    let (remote2, uncreated2, addr2) = (remote.clone(), uncreated.clone(), addr.clone());
    let refused = tokio::task::spawn_blocking(move || {
        ok(
            &cfg,
            &["login", &addr2, "-u", "AWS", "--password-stdin"],
            Some(&password),
        );
        ok(&cfg, &["tag", TEST_IMAGE, &remote2], None);
        ok(&cfg, &["tag", TEST_IMAGE, &uncreated2], None);
        ok(&cfg, &["push", &remote2], None);
        ok(&cfg, &["rmi", &remote2], None);
        ok(&cfg, &["pull", &remote2], None);
        let refused = docker(&cfg, &["push", &uncreated2], None);
        // Clean up whatever happened above.
        let _ = docker(&cfg, &["rmi", &remote2, &uncreated2], None);
        let _ = docker(&cfg, &["logout", &addr2], None);
        refused
    })
    .await
    .unwrap();
    assert!(
        !refused.status.success(),
        "push to an uncreated repository succeeded"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(
        stderr.contains("name unknown") || stderr.contains("does not exist"),
        "{stderr}"
    );

    let images = call("DescribeImages", json!({"repositoryName": "team/busybox"})).await;
    let detail = &images["imageDetails"][0];
    assert_eq!(detail["imageTags"], json!(["latest"]));
    assert!(detail["imageSizeInBytes"].as_u64().unwrap() > 0);
    // No lastRecordedPullTime check: the engine still has the layers (the source image
    // is kept), so `docker pull` may resolve the tag with a HEAD and fetch nothing, and
    // only manifest GETs (and BatchGetImage) count as pulls.
    assert!(registry
        .ecr
        .model()
        .validate_output("DescribeImages", &images)
        .is_ok());
}
