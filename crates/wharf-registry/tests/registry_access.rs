//! Repository policies, public repositories and ECR's image rules (acceptedMediaTypes,
//! manifest lists and the images they reference, what counts as a pull), through both
//! doors in-process: the
//! ECR and ECR Public APIs (`AwsService::call`, every success checked against the
//! operation's model output shape, every error against the model's declared errors
//! or AccessDeniedException) and the OCI router with the Docker token flow.

mod common;

use base64::Engine as _;
use common::{Reply, TestRegistry, OCI_MANIFEST};
use http::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use wharf_aws::{AwsError, AwsService, CallContext, ServiceInput, ServiceOutput};
use wharf_registry::{build_with, FsBlobStore, Registry, RegistryConfig};
use wharf_store::sqlite::SqliteStore;
use wharf_store::Store;

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "000000000000";
const ADDR: &str = "127.0.0.1:5000";
const START_MILLIS: i64 = 1_700_000_000_000;

/// The owner account's root key, and Bob from another account.
const ROOT_KEY: &str = "ROOTKEY";
const BOB_KEY: &str = "BOBKEY";
const BOB_ACCOUNT: &str = "111111111111";
const BOB_ARN: &str = "arn:aws:iam::111111111111:user/bob";

struct Harness {
    registry: Registry,
    oci: TestRegistry,
    now: Arc<AtomicI64>,
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

impl Harness {
    fn new() -> Self {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(FsBlobStore::new(dir.path()).unwrap());
        let now = Arc::new(AtomicI64::new(START_MILLIS));
        let clock_now = now.clone();
        let registry = build_with(
            store,
            blobs,
            RegistryConfig {
                region: REGION.into(),
                account_id: ACCOUNT.into(),
                registry_addr: ADDR.into(),
            },
            Arc::new(move || clock_now.load(Ordering::SeqCst)),
        );
        registry.identities.insert(BOB_KEY, BOB_ARN);
        let oci = TestRegistry {
            router: registry.router.clone(),
            dir,
        };
        Harness { registry, oci, now }
    }

    async fn call_as(
        &self,
        public: bool,
        key: &str,
        op: &str,
        input: Value,
    ) -> Result<Value, AwsError> {
        let account = if key == BOB_KEY { BOB_ACCOUNT } else { ACCOUNT };
        let ctx = CallContext {
            request_id: "req".into(),
            region: REGION.into(),
            access_key_id: key.into(),
            account_id: account.into(),
        };
        let service = if public {
            &self.registry.ecr_public
        } else {
            &self.registry.ecr
        };
        let model = service.model();
        match service.call(&ctx, op, ServiceInput::Json(input)).await {
            Ok(ServiceOutput::Json(value)) => {
                if let Err(v) = model.validate_output(op, &value) {
                    panic!("{op} output violates the model: {v:?}\n{value:#}");
                }
                Ok(value)
            }
            Ok(other) => panic!("{op} answered {other:?}"),
            Err(err) => {
                let declared = model.error_names(op).unwrap();
                assert!(
                    err.code == "AccessDeniedException"
                        || declared.iter().any(|e| e.code == err.code),
                    "{op} answered {} which the model does not declare",
                    err.code
                );
                Err(err)
            }
        }
    }

    async fn ok(&self, op: &str, input: Value) -> Value {
        self.call_as(false, ROOT_KEY, op, input)
            .await
            .unwrap_or_else(|e| panic!("{op} failed: {e:?}"))
    }

    async fn err(&self, op: &str, input: Value) -> String {
        self.call_as(false, ROOT_KEY, op, input)
            .await
            .expect_err(op)
            .code
    }

    async fn public_ok(&self, op: &str, input: Value) -> Value {
        self.call_as(true, ROOT_KEY, op, input)
            .await
            .unwrap_or_else(|e| panic!("{op} failed: {e:?}"))
    }

    /// A registry password for `key` (through GetAuthorizationToken).
    async fn password(&self, key: &str) -> String {
        let out = self
            .call_as(false, key, "GetAuthorizationToken", json!({}))
            .await
            .unwrap();
        let token = out["authorizationData"][0]["authorizationToken"]
            .as_str()
            .unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(token)
            .unwrap();
        String::from_utf8(decoded)
            .unwrap()
            .strip_prefix("AWS:")
            .unwrap()
            .to_string()
    }

    async fn basic(&self, key: &str) -> String {
        format!(
            "Basic {}",
            b64(&format!("AWS:{}", self.password(key).await))
        )
    }

    async fn send(&self, method: &str, uri: &str, auth: Option<&str>, body: Vec<u8>) -> Reply {
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        if uri.contains("/manifests/") && method == "PUT" {
            headers.push(("content-type", OCI_MANIFEST));
        }
        self.oci.send(method, uri, &headers, body).await
    }

    /// Pushes a one-layer image as `auth`; returns (manifest digest, layer digest).
    async fn push_image(&self, auth: &str, repo: &str, tag: &str, seed: &str) -> (String, String) {
        let mut digests = Vec::new();
        for bytes in [format!("{{\"seed\":\"{seed}\"}}"), format!("layer {seed}")] {
            let digest = common::sha256(bytes.as_bytes());
            let r = self
                .send(
                    "POST",
                    &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                    Some(auth),
                    bytes.into_bytes(),
                )
                .await;
            assert_eq!(
                r.status,
                StatusCode::CREATED,
                "{}",
                String::from_utf8_lossy(&r.body)
            );
            digests.push(digest);
        }
        let manifest = common::image_manifest(&digests[0], &[&digests[1]], None);
        let r = self
            .send(
                "PUT",
                &format!("/v2/{repo}/manifests/{tag}"),
                Some(auth),
                manifest,
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        (
            r.header("docker-content-digest").to_string(),
            digests[1].clone(),
        )
    }
}

fn deny_all(actions: Value) -> String {
    json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "no", "Effect": "Deny", "Principal": "*", "Action": actions}
    ]})
    .to_string()
}

#[tokio::test]
async fn policy_operations_follow_the_model() {
    let h = Harness::new();
    let repo = json!({"repositoryName": "team/app"});
    assert_eq!(
        h.err(
            "SetRepositoryPolicy",
            json!({"repositoryName": "team/app", "policyText": deny_all(json!("ecr:PutImage"))})
        )
        .await,
        "RepositoryNotFoundException"
    );
    h.ok("CreateRepository", repo.clone()).await;
    assert_eq!(
        h.err("GetRepositoryPolicy", repo.clone()).await,
        "RepositoryPolicyNotFoundException"
    );
    assert_eq!(
        h.err("DeleteRepositoryPolicy", repo.clone()).await,
        "RepositoryPolicyNotFoundException"
    );
    for bad in [
        "{not json".to_string(),
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject"}]}).to_string(),
        json!({"Version": "2012-10-17", "Statement": [{"Effect": "Perhaps", "Principal": "*", "Action": "ecr:*"}]}).to_string(),
        json!({"Version": "2012-10-17"}).to_string(),
    ] {
        assert_eq!(
            h.err("SetRepositoryPolicy", json!({"repositoryName": "team/app", "policyText": bad})).await,
            "InvalidParameterException"
        );
    }
    let text = deny_all(json!(["ecr:PutImage"]));
    let out = h
        .ok(
            "SetRepositoryPolicy",
            json!({"repositoryName": "team/app", "policyText": text}),
        )
        .await;
    assert_eq!(out["policyText"], text);
    assert_eq!(out["registryId"], ACCOUNT);
    assert_eq!(
        h.ok("GetRepositoryPolicy", repo.clone()).await["policyText"],
        text
    );

    // A policy that would stop its author from setting policies needs `force`.
    let lockout = deny_all(json!("ecr:*"));
    assert_eq!(
        h.err(
            "SetRepositoryPolicy",
            json!({"repositoryName": "team/app", "policyText": lockout})
        )
        .await,
        "InvalidParameterException"
    );
    h.ok(
        "SetRepositoryPolicy",
        json!({"repositoryName": "team/app", "policyText": lockout, "force": true}),
    )
    .await;
    // It denies the root everything but the policy operations themselves.
    assert_eq!(
        h.err("DescribeImages", repo.clone()).await,
        "AccessDeniedException"
    );
    assert_eq!(
        h.ok("DeleteRepositoryPolicy", repo.clone()).await["policyText"],
        lockout
    );
    h.ok("DescribeImages", repo.clone()).await;
    assert_eq!(
        h.err("GetRepositoryPolicy", repo.clone()).await,
        "RepositoryPolicyNotFoundException"
    );
}

#[tokio::test]
async fn an_explicit_deny_refuses_the_owner_on_both_doors() {
    let h = Harness::new();
    h.ok("CreateRepository", json!({"repositoryName": "team/app"}))
        .await;
    let auth = h.basic(ROOT_KEY).await;
    let (digest, layer) = h.push_image(&auth, "team/app", "v1", "a").await;
    let manifest_uri = format!("/v2/team/app/manifests/{digest}");
    assert_eq!(
        h.send("GET", &manifest_uri, Some(&auth), vec![])
            .await
            .status,
        StatusCode::OK
    );

    // Deny pulls (by wildcard) to everyone.
    h.ok(
        "SetRepositoryPolicy",
        json!({"repositoryName": "team/app", "policyText": deny_all(json!("ecr:BatchGet*"))}),
    )
    .await;
    let r = h.send("GET", &manifest_uri, Some(&auth), vec![]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.code(), "DENIED");
    let r = h
        .send(
            "GET",
            &format!("/v2/team/app/blobs/{layer}"),
            Some(&auth),
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        h.err(
            "BatchGetImage",
            json!({"repositoryName": "team/app", "imageIds": [{"imageTag": "v1"}]})
        )
        .await,
        "AccessDeniedException"
    );
    // Pushes are not denied by that policy.
    h.push_image(&auth, "team/app", "v2", "b").await;
    h.ok("InitiateLayerUpload", json!({"repositoryName": "team/app"}))
        .await;

    // Deny everything ECR: pushes and deletes go too, on both doors.
    h.ok("SetRepositoryPolicy", json!({"repositoryName": "team/app", "policyText": deny_all(json!("ecr:*")), "force": true})).await;
    let r = h
        .send("POST", "/v2/team/app/blobs/uploads/", Some(&auth), vec![])
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::FORBIDDEN, "DENIED")
    );
    let r = h.send("DELETE", &manifest_uri, Some(&auth), vec![]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::FORBIDDEN, "DENIED")
    );
    for (op, input) in [
        ("InitiateLayerUpload", json!({"repositoryName": "team/app"})),
        (
            "PutImage",
            json!({"repositoryName": "team/app", "imageManifest": "{}"}),
        ),
        (
            "BatchDeleteImage",
            json!({"repositoryName": "team/app", "imageIds": [{"imageTag": "v1"}]}),
        ),
        (
            "BatchCheckLayerAvailability",
            json!({"repositoryName": "team/app", "layerDigests": [layer]}),
        ),
        (
            "GetDownloadUrlForLayer",
            json!({"repositoryName": "team/app", "layerDigest": layer}),
        ),
    ] {
        assert_eq!(h.err(op, input).await, "AccessDeniedException", "{op}");
    }
    // The image is still there once the policy goes.
    h.ok(
        "DeleteRepositoryPolicy",
        json!({"repositoryName": "team/app"}),
    )
    .await;
    assert_eq!(
        h.send("GET", &manifest_uri, Some(&auth), vec![])
            .await
            .status,
        StatusCode::OK
    );
    let out = h
        .ok(
            "BatchGetImage",
            json!({"repositoryName": "team/app", "imageIds": [{"imageTag": "v1"}]}),
        )
        .await;
    assert_eq!(out["images"][0]["imageId"]["imageDigest"], digest);
}

#[tokio::test]
async fn an_allow_admits_another_account_to_what_it_names() {
    let h = Harness::new();
    h.ok("CreateRepository", json!({"repositoryName": "shared/app"}))
        .await;
    let root = h.basic(ROOT_KEY).await;
    let (digest, layer) = h.push_image(&root, "shared/app", "v1", "a").await;
    let bob = h.basic(BOB_KEY).await;
    let manifest_uri = format!("/v2/shared/app/manifests/{digest}");
    let blob_uri = format!("/v2/shared/app/blobs/{layer}");

    // No policy: Bob's token is valid, but the repository is not his.
    assert_eq!(
        h.send("GET", "/v2/", Some(&bob), vec![]).await.status,
        StatusCode::OK
    );
    let r = h.send("GET", &manifest_uri, Some(&bob), vec![]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::FORBIDDEN, "DENIED")
    );
    let bob_call = |op: &'static str, input: Value| h.call_as(false, BOB_KEY, op, input);
    assert_eq!(
        bob_call(
            "BatchGetImage",
            json!({"repositoryName": "shared/app", "imageIds": [{"imageTag": "v1"}]})
        )
        .await
        .unwrap_err()
        .code,
        "AccessDeniedException"
    );

    // Allow Bob to pull.
    let allow = json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "bob-pulls", "Effect": "Allow", "Principal": {"AWS": [BOB_ARN]},
        "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    }]});
    h.ok(
        "SetRepositoryPolicy",
        json!({"repositoryName": "shared/app", "policyText": allow.to_string()}),
    )
    .await;
    assert_eq!(
        h.send("GET", &manifest_uri, Some(&bob), vec![])
            .await
            .status,
        StatusCode::OK
    );
    let r = h.send("GET", &blob_uri, Some(&bob), vec![]).await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (StatusCode::OK, &b"layer a"[..])
    );
    let out = bob_call(
        "BatchGetImage",
        json!({"repositoryName": "shared/app", "imageIds": [{"imageTag": "v1"}]}),
    )
    .await
    .unwrap();
    assert_eq!(out["images"][0]["imageId"]["imageDigest"], digest);
    // Not pushes, not deletes, not other calls.
    let r = h
        .send("POST", "/v2/shared/app/blobs/uploads/", Some(&bob), vec![])
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::FORBIDDEN, "DENIED")
    );
    let r = h.send("DELETE", &manifest_uri, Some(&bob), vec![]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    for (op, input) in [
        (
            "PutImage",
            json!({"repositoryName": "shared/app", "imageManifest": "{}"}),
        ),
        ("DescribeImages", json!({"repositoryName": "shared/app"})),
        ("DescribeRepositories", json!({})),
        ("CreateRepository", json!({"repositoryName": "bobs/own"})),
        (
            "SetRepositoryPolicy",
            json!({"repositoryName": "shared/app", "policyText": allow.to_string()}),
        ),
    ] {
        assert_eq!(
            bob_call(op, input).await.unwrap_err().code,
            "AccessDeniedException",
            "{op}"
        );
    }

    // The whole account, by account id, for everything ECR; then a Deny for Bob on
    // Batch* wins over that Allow.
    let account_wide = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": BOB_ACCOUNT}, "Action": "ecr:*"},
        {"Effect": "Deny", "Principal": {"AWS": BOB_ARN}, "Action": "ecr:Batch*"},
    ]});
    h.ok(
        "SetRepositoryPolicy",
        json!({"repositoryName": "shared/app", "policyText": account_wide.to_string()}),
    )
    .await;
    let r = h.send("GET", &manifest_uri, Some(&bob), vec![]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    bob_call("DescribeImages", json!({"repositoryName": "shared/app"}))
        .await
        .unwrap();
    // The owner is not named by the Deny.
    assert_eq!(
        h.send("GET", &manifest_uri, Some(&root), vec![])
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn public_repositories_share_the_namespace_and_admit_anonymous_pulls() {
    let h = Harness::new();
    let created = h
        .public_ok(
            "CreateRepository",
            json!({"repositoryName": "pub/tools", "catalogData": {"description": "tools", "architectures": ["x86-64"]}, "tags": [{"Key": "team", "Value": "a"}]}),
        )
        .await;
    let repo = &created["repository"];
    assert_eq!(repo["repositoryUri"], format!("{ADDR}/pub/tools"));
    assert_eq!(
        repo["repositoryArn"],
        format!("arn:aws:ecr-public::{ACCOUNT}:repository/pub/tools")
    );
    assert_eq!(created["catalogData"]["description"], "tools");
    // One namespace: neither API can create the other's name.
    assert_eq!(
        h.err("CreateRepository", json!({"repositoryName": "pub/tools"}))
            .await,
        "RepositoryAlreadyExistsException"
    );
    h.ok("CreateRepository", json!({"repositoryName": "priv/tools"}))
        .await;
    assert_eq!(
        h.call_as(
            true,
            ROOT_KEY,
            "CreateRepository",
            json!({"repositoryName": "priv/tools"})
        )
        .await
        .unwrap_err()
        .code,
        "RepositoryAlreadyExistsException"
    );
    // Each API sees its own kind.
    let names = |v: &Value| -> Vec<String> {
        v["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["repositoryName"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(&h.ok("DescribeRepositories", json!({})).await),
        ["priv/tools"]
    );
    assert_eq!(
        names(&h.public_ok("DescribeRepositories", json!({})).await),
        ["pub/tools"]
    );
    assert_eq!(
        h.err("DescribeImages", json!({"repositoryName": "pub/tools"}))
            .await,
        "RepositoryNotFoundException"
    );

    // Push with a token, pull without one.
    let root = h.basic(ROOT_KEY).await;
    let (digest, layer) = h.push_image(&root, "pub/tools", "1.0", "p").await;
    h.push_image(&root, "priv/tools", "1.0", "q").await;
    let r = h
        .send("GET", "/v2/pub/tools/manifests/1.0", None, vec![])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("docker-content-digest"), digest);
    let r = h
        .send("GET", &format!("/v2/pub/tools/blobs/{layer}"), None, vec![])
        .await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (StatusCode::OK, &b"layer p"[..])
    );
    assert_eq!(
        h.send("GET", "/v2/pub/tools/tags/list", None, vec![])
            .await
            .json()["tags"],
        json!(["1.0"])
    );
    // Anonymous pushes, deletes and private pulls are challenged.
    for (method, uri) in [
        ("POST", "/v2/pub/tools/blobs/uploads/".to_string()),
        ("DELETE", format!("/v2/pub/tools/manifests/{digest}")),
        ("GET", "/v2/priv/tools/manifests/1.0".to_string()),
        ("GET", "/v2/".to_string()),
        ("GET", "/v2/_catalog".to_string()),
    ] {
        let r = h.send(method, &uri, None, vec![]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        assert_eq!(
            r.header("www-authenticate"),
            format!("Bearer realm=\"http://{ADDR}/token\",service=\"{ADDR}\"")
        );
    }

    // The token flow: anonymous callers get the anonymous token, logged-in ones their
    // password; a wrong password is refused.
    let t = h
        .send(
            "GET",
            "/token?service=x&scope=repository:pub/tools:pull",
            None,
            vec![],
        )
        .await;
    assert_eq!(t.status, StatusCode::OK);
    let anonymous = format!("Bearer {}", t.json()["token"].as_str().unwrap());
    assert_eq!(
        h.send(
            "GET",
            "/v2/pub/tools/manifests/1.0",
            Some(&anonymous),
            vec![]
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        h.send(
            "GET",
            "/v2/priv/tools/manifests/1.0",
            Some(&anonymous),
            vec![]
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    let t = h.send("GET", "/token?service=x", Some(&root), vec![]).await;
    let bearer = format!("Bearer {}", t.json()["access_token"].as_str().unwrap());
    assert_eq!(
        h.send("GET", "/v2/priv/tools/manifests/1.0", Some(&bearer), vec![])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        h.send("GET", "/v2/", Some(&bearer), vec![]).await.status,
        StatusCode::OK
    );
    let wrong = format!("Basic {}", b64("AWS:wrong"));
    assert_eq!(
        h.send("GET", "/token", Some(&wrong), vec![]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.send(
            "GET",
            "/v2/pub/tools/manifests/1.0",
            Some("Bearer nope"),
            vec![]
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    let form = format!(
        "grant_type=password&username=AWS&password={}&service=x",
        h.password(ROOT_KEY).await
    );
    let t = h.send("POST", "/token", None, form.into_bytes()).await;
    assert_eq!(t.status, StatusCode::OK);

    // Once tokens expire, private pulls are refused and public ones still work.
    h.now.fetch_add(12 * 3600 * 1000, Ordering::SeqCst);
    assert_eq!(
        h.send("GET", "/v2/priv/tools/manifests/1.0", Some(&root), vec![])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        h.send("GET", "/v2/pub/tools/manifests/1.0", None, vec![])
            .await
            .status,
        StatusCode::OK
    );

    // A policy can close a public repository to everyone.
    h.public_ok("SetRepositoryPolicy", json!({"repositoryName": "pub/tools", "policyText": deny_all(json!("ecr-public:BatchGetImage"))})).await;
    assert_eq!(
        h.send("GET", "/v2/pub/tools/manifests/1.0", None, vec![])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    h.public_ok(
        "DeleteRepositoryPolicy",
        json!({"repositoryName": "pub/tools"}),
    )
    .await;
    assert_eq!(
        h.send("GET", "/v2/pub/tools/manifests/1.0", None, vec![])
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_public_api_describes_images_tags_catalog_data_and_tokens() {
    let h = Harness::new();
    h.public_ok("CreateRepository", json!({"repositoryName": "pub/img"}))
        .await;
    let root = h.basic(ROOT_KEY).await;
    let (digest, _) = h.push_image(&root, "pub/img", "v1", "x").await;
    let images = h
        .public_ok("DescribeImages", json!({"repositoryName": "pub/img"}))
        .await;
    let detail = &images["imageDetails"][0];
    assert_eq!(detail["imageDigest"], digest);
    assert_eq!(detail["imageTags"], json!(["v1"]));
    assert!(detail.get("lastRecordedPullTime").is_none());
    let tags = h
        .public_ok("DescribeImageTags", json!({"repositoryName": "pub/img"}))
        .await;
    assert_eq!(tags["imageTagDetails"][0]["imageTag"], "v1");
    assert_eq!(
        tags["imageTagDetails"][0]["imageDetail"]["imageDigest"],
        digest
    );

    let token = h.public_ok("GetAuthorizationToken", json!({})).await;
    let encoded = token["authorizationData"]["authorizationToken"]
        .as_str()
        .unwrap();
    let basic = format!("Basic {encoded}");
    assert_eq!(
        h.send("GET", "/v2/", Some(&basic), vec![]).await.status,
        StatusCode::OK
    );

    let data = h.public_ok("PutRepositoryCatalogData", json!({"repositoryName": "pub/img", "catalogData": {"aboutText": "# About", "usageText": "pull it"}})).await;
    assert_eq!(data["catalogData"]["aboutText"], "# About");
    let got = h
        .public_ok(
            "GetRepositoryCatalogData",
            json!({"repositoryName": "pub/img"}),
        )
        .await;
    assert_eq!(got["catalogData"]["usageText"], "pull it");
    assert_eq!(got["catalogData"]["marketplaceCertified"], false);

    let arn = format!("arn:aws:ecr-public::{ACCOUNT}:repository/pub/img");
    h.public_ok(
        "TagResource",
        json!({"resourceArn": arn, "tags": [{"Key": "k", "Value": "v"}]}),
    )
    .await;
    assert_eq!(
        h.public_ok("ListTagsForResource", json!({"resourceArn": arn}))
            .await["tags"],
        json!([{"Key": "k", "Value": "v"}])
    );
    let registries = h.public_ok("DescribeRegistries", json!({})).await;
    assert_eq!(registries["registries"][0]["registryUri"], ADDR);

    // Deleting needs force while images remain.
    assert_eq!(
        h.call_as(
            true,
            ROOT_KEY,
            "DeleteRepository",
            json!({"repositoryName": "pub/img"})
        )
        .await
        .unwrap_err()
        .code,
        "RepositoryNotEmptyException"
    );
    h.public_ok(
        "DeleteRepository",
        json!({"repositoryName": "pub/img", "force": true}),
    )
    .await;
    assert_eq!(
        h.send("GET", "/v2/pub/img/manifests/v1", None, vec![])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

#[tokio::test]
async fn image_rules_accepted_media_types_manifest_lists_and_pulls() {
    let h = Harness::new();
    h.ok("CreateRepository", json!({"repositoryName": "team/multi"}))
        .await;
    let root = h.basic(ROOT_KEY).await;
    let (child, layer) = h.push_image(&root, "team/multi", "amd64", "c").await;
    let get = json!({"repositoryName": "team/multi", "imageIds": [{"imageTag": "amd64"}]});

    // acceptedMediaTypes: a manifest of another type is a failure, not an image.
    let mut only_docker = get.clone();
    only_docker["acceptedMediaTypes"] =
        json!(["application/vnd.docker.distribution.manifest.v2+json"]);
    let out = h.ok("BatchGetImage", only_docker).await;
    assert_eq!(out["images"], json!([]));
    assert_eq!(out["failures"][0]["failureCode"], "ImageNotFound");
    let mut oci = get.clone();
    oci["acceptedMediaTypes"] = json!([OCI_MANIFEST]);
    assert_eq!(
        h.ok("BatchGetImage", oci).await["images"][0]["imageId"]["imageDigest"],
        child
    );

    // An index naming a manifest the repository lacks is ReferencedImagesNotFound; an
    // image naming a missing layer is LayersNotFound.
    let missing = common::sha256(b"no such manifest");
    let index = |children: &[&str]| {
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children.iter().map(|d| json!({
            "mediaType": OCI_MANIFEST, "digest": d, "size": 1, "platform": {"architecture": "amd64", "os": "linux"}
        })).collect::<Vec<_>>()})
        .to_string()
    };
    assert_eq!(
        h.err("PutImage", json!({"repositoryName": "team/multi", "imageManifest": index(&[&missing]), "imageTag": "list"})).await,
        "ReferencedImagesNotFoundException"
    );
    let config = common::sha256(b"{\"seed\":\"c\"}");
    let bad_image = String::from_utf8(common::image_manifest(&config, &[&missing], None)).unwrap();
    assert_eq!(
        h.err(
            "PutImage",
            json!({"repositoryName": "team/multi", "imageManifest": bad_image})
        )
        .await,
        "LayersNotFoundException"
    );

    // While a list references the child, the child cannot be deleted (by digest, or
    // by its last tag); the list can, and then the child too.
    let list = h.ok("PutImage", json!({"repositoryName": "team/multi", "imageManifest": index(&[&child]), "imageTag": "list"})).await;
    let list_digest = list["image"]["imageId"]["imageDigest"]
        .as_str()
        .unwrap()
        .to_string();
    for id in [json!({"imageDigest": child}), json!({"imageTag": "amd64"})] {
        let out = h
            .ok(
                "BatchDeleteImage",
                json!({"repositoryName": "team/multi", "imageIds": [id]}),
            )
            .await;
        assert_eq!(
            out["failures"][0]["failureCode"], "ImageReferencedByManifestList",
            "{id}"
        );
        assert!(out.get("imageIds").is_none());
    }
    assert_eq!(
        h.send(
            "GET",
            &format!("/v2/team/multi/blobs/{layer}"),
            Some(&root),
            vec![]
        )
        .await
        .status,
        StatusCode::OK
    );
    let out = h
        .ok(
            "BatchDeleteImage",
            json!({"repositoryName": "team/multi", "imageIds": [{"imageDigest": list_digest}]}),
        )
        .await;
    assert_eq!(out["failures"], json!([]));
    let out = h
        .ok(
            "BatchDeleteImage",
            json!({"repositoryName": "team/multi", "imageIds": [{"imageTag": "amd64"}]}),
        )
        .await;
    assert_eq!(out["imageIds"][0]["imageDigest"], child);

    // HEAD of a manifest is not a pull; GET is.
    let (digest, _) = h.push_image(&root, "team/multi", "v2", "d").await;
    let pulled = || async {
        let out = h
            .ok(
                "DescribeImages",
                json!({"repositoryName": "team/multi", "imageIds": [{"imageDigest": digest}]}),
            )
            .await;
        out["imageDetails"][0].get("lastRecordedPullTime").cloned()
    };
    assert_eq!(
        h.send("HEAD", "/v2/team/multi/manifests/v2", Some(&root), vec![])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(pulled().await, None);
    h.now.fetch_add(1000, Ordering::SeqCst);
    assert_eq!(
        h.send("GET", "/v2/team/multi/manifests/v2", Some(&root), vec![])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        pulled().await,
        Some(json!((START_MILLIS + 1000) as f64 / 1000.0))
    );
}
