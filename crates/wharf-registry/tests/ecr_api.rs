//! The ECR API driven in-process through `AwsService::call`, together with the OCI
//! router `build_with` wires to the same store. Every successful response is checked
//! against the botocore model's output shape and every error code against the errors
//! the model declares for the operation.

mod common;

use base64::Engine as _;
use common::{image_manifest, sha256, TestRegistry, OCI_MANIFEST};
use http::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use wharf_aws::{AwsError, AwsService, CallContext, ServiceInput, ServiceOutput};
use wharf_registry::{build_with, EcrService, FsBlobStore, RegistryConfig};
use wharf_store::sqlite::SqliteStore;
use wharf_store::Store;

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "000000000000";
const ADDR: &str = "127.0.0.1:5000";
const START_MILLIS: i64 = 1_700_000_000_000;
const GENERIC_ERRORS: [&str; 2] = ["SerializationException", "UnknownOperationException"];

struct Harness {
    ecr: Arc<EcrService>,
    oci: TestRegistry,
    now: Arc<AtomicI64>,
    store: Arc<dyn Store>,
}

fn config() -> RegistryConfig {
    RegistryConfig {
        region: REGION.into(),
        account_id: ACCOUNT.into(),
        registry_addr: ADDR.into(),
    }
}

impl Harness {
    fn new() -> Self {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        Self::over(
            store,
            tempfile::tempdir().unwrap(),
            Arc::new(AtomicI64::new(START_MILLIS)),
        )
    }

    /// A registry over an existing store and blob directory (a restart).
    fn over(store: Arc<dyn Store>, dir: tempfile::TempDir, now: Arc<AtomicI64>) -> Self {
        let blobs = Arc::new(FsBlobStore::new(dir.path()).unwrap());
        let clock_now = now.clone();
        let registry = build_with(
            store.clone(),
            blobs,
            config(),
            Arc::new(move || clock_now.load(Ordering::SeqCst)),
        );
        Harness {
            ecr: registry.ecr,
            oci: TestRegistry {
                router: registry.router,
                dir,
            },
            now,
            store,
        }
    }

    async fn call_in(&self, region: &str, op: &str, input: Value) -> Result<Value, AwsError> {
        let ctx = CallContext {
            request_id: "req".into(),
            region: region.into(),
            access_key_id: "AKIDTEST".into(),
            account_id: ACCOUNT.into(),
        };
        let model = self.ecr.model();
        match self.ecr.call(&ctx, op, ServiceInput::Json(input)).await {
            Ok(ServiceOutput::Json(value)) => {
                if let Err(violations) = model.validate_output(op, &value) {
                    panic!("{op} output violates the model: {violations:?}\n{value:#}");
                }
                Ok(value)
            }
            Ok(other) => panic!("{op} answered {other:?}"),
            Err(err) => {
                if !GENERIC_ERRORS.contains(&err.code.as_str()) {
                    let declared = model.error_names(op).unwrap();
                    assert!(
                        declared.iter().any(|e| e.code == err.code),
                        "{op} answered undeclared {} ({})",
                        err.code,
                        err.message
                    );
                }
                Err(err)
            }
        }
    }

    async fn ok(&self, op: &str, input: Value) -> Value {
        self.call_in(REGION, op, input.clone())
            .await
            .unwrap_or_else(|e| panic!("{op} failed: {e} (input {input})"))
    }

    async fn err(&self, op: &str, input: Value) -> String {
        match self.call_in(REGION, op, input.clone()).await {
            Ok(v) => panic!("{op} should have failed (input {input}): {v:#}"),
            Err(e) => {
                assert!(!e.message.is_empty());
                e.code
            }
        }
    }

    async fn create(&self, name: &str) -> Value {
        self.ok("CreateRepository", json!({"repositoryName": name}))
            .await
    }

    /// A fresh `Authorization` header value from GetAuthorizationToken.
    async fn basic_auth(&self) -> String {
        let out = self.ok("GetAuthorizationToken", json!({})).await;
        format!(
            "Basic {}",
            out["authorizationData"][0]["authorizationToken"]
                .as_str()
                .unwrap()
        )
    }

    /// Uploads `bytes` as a layer through the ECR API, in parts of `part` bytes.
    async fn upload_layer(&self, repo: &str, bytes: &[u8], part: usize) -> String {
        let up = self
            .ok("InitiateLayerUpload", json!({"repositoryName": repo}))
            .await;
        let id = up["uploadId"].as_str().unwrap().to_string();
        for (i, chunk) in bytes.chunks(part).enumerate() {
            let first = i * part;
            self.ok(
                "UploadLayerPart",
                json!({
                    "repositoryName": repo, "uploadId": id,
                    "partFirstByte": first, "partLastByte": first + chunk.len() - 1,
                    "layerPartBlob": b64(chunk),
                }),
            )
            .await;
        }
        let digest = sha256(bytes);
        self.ok(
            "CompleteLayerUpload",
            json!({"repositoryName": repo, "uploadId": id, "layerDigests": [digest]}),
        )
        .await;
        digest
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn repositories_create_describe_page_and_delete() {
    let h = Harness::new();
    let out = h
        .ok(
            "CreateRepository",
            json!({
                "repositoryName": "team/web",
                "imageTagMutability": "IMMUTABLE",
                "imageScanningConfiguration": {"scanOnPush": true},
                "encryptionConfiguration": {"encryptionType": "KMS", "kmsKey": "arn:aws:kms:us-east-1:000000000000:key/k"},
                "tags": [{"Key": "team", "Value": "web"}],
            }),
        )
        .await;
    let repo = &out["repository"];
    assert_eq!(
        repo["repositoryArn"],
        "arn:aws:ecr:us-east-1:000000000000:repository/team/web"
    );
    assert_eq!(repo["registryId"], ACCOUNT);
    assert_eq!(repo["repositoryUri"], "127.0.0.1:5000/team/web");
    assert_eq!(repo["imageTagMutability"], "IMMUTABLE");
    assert_eq!(repo["imageScanningConfiguration"]["scanOnPush"], true);
    assert_eq!(repo["encryptionConfiguration"]["encryptionType"], "KMS");
    assert_eq!(repo["createdAt"], json!(START_MILLIS as f64 / 1000.0));
    assert_eq!(
        h.err("CreateRepository", json!({"repositoryName": "team/web"}))
            .await,
        "RepositoryAlreadyExistsException"
    );
    for bad in ["a", "Team/web", "team//web", "a..b", &"a".repeat(257)] {
        assert_eq!(
            h.err("CreateRepository", json!({"repositoryName": bad}))
                .await,
            "InvalidParameterException",
            "{bad}"
        );
    }
    assert_eq!(
        h.err(
            "CreateRepository",
            json!({"repositoryName": "ok", "imageTagMutability": "SOMETIMES"})
        )
        .await,
        "InvalidParameterException"
    );
    assert_eq!(
        h.err(
            "CreateRepository",
            json!({"repositoryName": "ok", "tags": [{"Key": "", "Value": "x"}]})
        )
        .await,
        "InvalidTagParameterException"
    );
    let many: Vec<Value> = (0..51)
        .map(|i| json!({"Key": format!("k{i}"), "Value": "v"}))
        .collect();
    assert_eq!(
        h.err(
            "CreateRepository",
            json!({"repositoryName": "ok", "tags": many})
        )
        .await,
        "TooManyTagsException"
    );
    let default = h.create("team/api").await;
    assert_eq!(default["repository"]["imageTagMutability"], "MUTABLE");
    assert_eq!(
        default["repository"]["encryptionConfiguration"]["encryptionType"],
        "AES256"
    );
    h.create("zeta").await;

    let all = h.ok("DescribeRepositories", json!({})).await;
    let names: Vec<&str> = all["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["repositoryName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team/api", "team/web", "zeta"]);
    let p1 = h.ok("DescribeRepositories", json!({"maxResults": 2})).await;
    assert_eq!(p1["repositories"].as_array().unwrap().len(), 2);
    let p2 = h
        .ok(
            "DescribeRepositories",
            json!({"maxResults": 2, "nextToken": p1["nextToken"]}),
        )
        .await;
    assert_eq!(p2["repositories"][0]["repositoryName"], "zeta");
    assert!(p2.get("nextToken").is_none());
    let named = h
        .ok("DescribeRepositories", json!({"repositoryNames": ["zeta"]}))
        .await;
    assert_eq!(named["repositories"].as_array().unwrap().len(), 1);
    assert_eq!(
        h.err("DescribeRepositories", json!({"repositoryNames": ["nope"]}))
            .await,
        "RepositoryNotFoundException"
    );
    assert_eq!(
        h.err("DescribeRepositories", json!({"nextToken": "garbage"}))
            .await,
        "InvalidParameterException"
    );
    assert_eq!(
        h.err("DescribeRepositories", json!({"maxResults": 0}))
            .await,
        "InvalidParameterException"
    );

    // Another region or registry is refused, not silently served.
    let other = h
        .call_in("eu-west-1", "DescribeRepositories", json!({}))
        .await
        .unwrap_err();
    assert_eq!(other.code, "InvalidParameterException");
    assert_eq!(
        h.err(
            "DescribeRepositories",
            json!({"registryId": "111111111111"})
        )
        .await,
        "InvalidParameterException"
    );

    let deleted = h
        .ok("DeleteRepository", json!({"repositoryName": "zeta"}))
        .await;
    assert_eq!(deleted["repository"]["repositoryName"], "zeta");
    assert_eq!(
        h.err("DeleteRepository", json!({"repositoryName": "zeta"}))
            .await,
        "RepositoryNotFoundException"
    );
}

#[tokio::test]
async fn tag_mutability_and_resource_tags() {
    let h = Harness::new();
    h.create("team/web").await;
    let out = h
        .ok(
            "PutImageTagMutability",
            json!({"repositoryName": "team/web", "imageTagMutability": "IMMUTABLE"}),
        )
        .await;
    assert_eq!(out["imageTagMutability"], "IMMUTABLE");
    let out = h
        .ok(
            "PutImageTagMutability",
            json!({"repositoryName": "team/web", "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION",
                   "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "dev-*"}]}),
        )
        .await;
    assert_eq!(
        out["imageTagMutabilityExclusionFilters"][0]["filter"],
        "dev-*"
    );
    assert_eq!(
        h.err(
            "PutImageTagMutability",
            json!({"repositoryName": "team/web", "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION"})
        )
        .await,
        "InvalidParameterException"
    );
    assert_eq!(
        h.err(
            "PutImageTagMutability",
            json!({"repositoryName": "nope", "imageTagMutability": "MUTABLE"})
        )
        .await,
        "RepositoryNotFoundException"
    );

    let arn = "arn:aws:ecr:us-east-1:000000000000:repository/team/web";
    h.ok("TagResource", json!({"resourceArn": arn, "tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]})).await;
    h.ok(
        "UntagResource",
        json!({"resourceArn": arn, "tagKeys": ["a"]}),
    )
    .await;
    let tags = h
        .ok("ListTagsForResource", json!({"resourceArn": arn}))
        .await;
    assert_eq!(tags["tags"], json!([{"Key": "b", "Value": "2"}]));
    let many: Vec<Value> = (0..50)
        .map(|i| json!({"Key": format!("k{i}"), "Value": "v"}))
        .collect();
    assert_eq!(
        h.err("TagResource", json!({"resourceArn": arn, "tags": many}))
            .await,
        "TooManyTagsException"
    );
    assert_eq!(
        h.err(
            "TagResource",
            json!({"resourceArn": arn, "tags": [{"Key": "aws:x", "Value": "v"}]})
        )
        .await,
        "InvalidTagParameterException"
    );
    assert_eq!(
        h.err(
            "ListTagsForResource",
            json!({"resourceArn": "arn:aws:ecr:us-east-1:000000000000:repository/nope"})
        )
        .await,
        "RepositoryNotFoundException"
    );
    assert_eq!(
        h.err(
            "ListTagsForResource",
            json!({"resourceArn": "arn:aws:ecs:us-east-1:000000000000:cluster/x"})
        )
        .await,
        "InvalidParameterException"
    );
    assert_eq!(
        h.err("UntagResource", json!({"resourceArn": "arn:aws:ecr:us-east-1:000000000000:repository/nope", "tagKeys": ["a"]})).await,
        "RepositoryNotFoundException"
    );
}

#[tokio::test]
async fn layer_uploads_put_image_and_pull_over_oci() {
    let h = Harness::new();
    h.create("team/web").await;
    let repo = json!("team/web");

    // Parts must follow each other and frame the bytes sent.
    let up = h
        .ok("InitiateLayerUpload", json!({"repositoryName": repo}))
        .await;
    assert!(up["partSize"].as_u64().unwrap() > 0);
    let id = up["uploadId"].as_str().unwrap();
    let part = |first: u64, last: u64, bytes: &[u8]| json!({"repositoryName": "team/web", "uploadId": id, "partFirstByte": first, "partLastByte": last, "layerPartBlob": b64(bytes)});
    assert_eq!(
        h.err("UploadLayerPart", part(5, 9, b"hello")).await,
        "InvalidLayerPartException"
    );
    assert_eq!(
        h.err("UploadLayerPart", part(0, 9, b"hello")).await,
        "InvalidLayerPartException"
    );
    let r = h.ok("UploadLayerPart", part(0, 4, b"hello")).await;
    assert_eq!(r["lastByteReceived"], 4);
    assert_eq!(
        h.err("UploadLayerPart", part(0, 4, b"hello")).await,
        "InvalidLayerPartException"
    );
    h.ok("UploadLayerPart", part(5, 10, b" world")).await;
    assert_eq!(
        h.err(
            "CompleteLayerUpload",
            json!({"repositoryName": repo, "uploadId": id, "layerDigests": [sha256(b"other")]})
        )
        .await,
        "InvalidLayerException"
    );
    let layer = sha256(b"hello world");
    let done = h
        .ok(
            "CompleteLayerUpload",
            json!({"repositoryName": repo, "uploadId": id, "layerDigests": [layer]}),
        )
        .await;
    assert_eq!(done["layerDigest"], layer);
    assert_eq!(
        h.err(
            "CompleteLayerUpload",
            json!({"repositoryName": repo, "uploadId": id, "layerDigests": [layer]})
        )
        .await,
        "UploadNotFoundException"
    );
    assert_eq!(
        h.err("UploadLayerPart", json!({"repositoryName": repo, "uploadId": "00000000-0000-0000-0000-000000000000", "partFirstByte": 0, "partLastByte": 0, "layerPartBlob": "AA=="})).await,
        "UploadNotFoundException"
    );
    let empty = h
        .ok("InitiateLayerUpload", json!({"repositoryName": repo}))
        .await;
    assert_eq!(
        h.err(
            "CompleteLayerUpload",
            json!({"repositoryName": repo, "uploadId": empty["uploadId"], "layerDigests": [layer]})
        )
        .await,
        "EmptyUploadException"
    );
    // Uploading a layer the repository already has.
    let again = h
        .ok("InitiateLayerUpload", json!({"repositoryName": repo}))
        .await;
    h.ok("UploadLayerPart", json!({"repositoryName": repo, "uploadId": again["uploadId"], "partFirstByte": 0, "partLastByte": 10, "layerPartBlob": b64(b"hello world")})).await;
    assert_eq!(
        h.err(
            "CompleteLayerUpload",
            json!({"repositoryName": repo, "uploadId": again["uploadId"], "layerDigests": [layer]})
        )
        .await,
        "LayerAlreadyExistsException"
    );
    assert_eq!(
        h.err("InitiateLayerUpload", json!({"repositoryName": "nope"}))
            .await,
        "RepositoryNotFoundException"
    );

    let config = h
        .upload_layer("team/web", br#"{"architecture":"amd64"}"#, 7)
        .await;
    let missing = sha256(b"never uploaded");
    let check = h
        .ok(
            "BatchCheckLayerAvailability",
            json!({"repositoryName": repo, "layerDigests": [layer, missing, "nonsense"]}),
        )
        .await;
    assert_eq!(check["layers"][0]["layerAvailability"], "AVAILABLE");
    assert_eq!(check["layers"][0]["layerSize"], 11);
    assert_eq!(check["layers"][1]["layerAvailability"], "UNAVAILABLE");
    assert_eq!(check["failures"][0]["failureCode"], "InvalidLayerDigest");
    let url = h
        .ok(
            "GetDownloadUrlForLayer",
            json!({"repositoryName": repo, "layerDigest": layer}),
        )
        .await;
    assert_eq!(
        url["downloadUrl"],
        format!("http://{ADDR}/v2/team/web/blobs/{layer}")
    );
    assert_eq!(
        h.err(
            "GetDownloadUrlForLayer",
            json!({"repositoryName": repo, "layerDigest": missing})
        )
        .await,
        "LayersNotFoundException"
    );

    // PutImage.
    let manifest = String::from_utf8(image_manifest(&config, &[&layer], None)).unwrap();
    let digest = sha256(manifest.as_bytes());
    let put = h
        .ok("PutImage", json!({"repositoryName": repo, "imageManifest": manifest, "imageManifestMediaType": OCI_MANIFEST, "imageTag": "v1"}))
        .await;
    assert_eq!(put["image"]["imageId"]["imageDigest"], digest);
    assert_eq!(put["image"]["imageManifestMediaType"], OCI_MANIFEST);
    assert_eq!(
        h.err(
            "PutImage",
            json!({"repositoryName": repo, "imageManifest": manifest, "imageTag": "v1"})
        )
        .await,
        "ImageAlreadyExistsException"
    );
    h.ok(
        "PutImage",
        json!({"repositoryName": repo, "imageManifest": manifest, "imageTag": "latest"}),
    )
    .await;
    let bad_layers = String::from_utf8(image_manifest(&config, &[&missing], None)).unwrap();
    assert_eq!(
        h.err(
            "PutImage",
            json!({"repositoryName": repo, "imageManifest": bad_layers})
        )
        .await,
        "LayersNotFoundException"
    );
    assert_eq!(
        h.err("PutImage", json!({"repositoryName": repo, "imageManifest": manifest, "imageDigest": sha256(b"x"), "imageTag": "v9"})).await,
        "ImageDigestDoesNotMatchException"
    );
    assert_eq!(
        h.err(
            "PutImage",
            json!({"repositoryName": repo, "imageManifest": "not json"})
        )
        .await,
        "InvalidParameterException"
    );
    assert_eq!(
        h.err(
            "PutImage",
            json!({"repositoryName": "nope", "imageManifest": manifest})
        )
        .await,
        "RepositoryNotFoundException"
    );

    // Pullable over OCI with a token; the pull is recorded.
    let auth = h.basic_auth().await;
    h.now.fetch_add(60_000, Ordering::SeqCst);
    let r = h
        .oci
        .send(
            "GET",
            "/v2/team/web/manifests/v1",
            &[("authorization", &auth)],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, manifest.as_bytes());
    let r = h
        .oci
        .send(
            "GET",
            &format!("/v2/team/web/blobs/{layer}"),
            &[("authorization", &auth)],
            vec![],
        )
        .await;
    assert_eq!(r.body, b"hello world");

    let listed = h.ok("ListImages", json!({"repositoryName": repo})).await;
    assert_eq!(listed["imageIds"].as_array().unwrap().len(), 2);
    let details = h
        .ok("DescribeImages", json!({"repositoryName": repo}))
        .await;
    let d = &details["imageDetails"][0];
    assert_eq!(d["imageDigest"], digest);
    assert_eq!(d["imageTags"], json!(["latest", "v1"]));
    assert_eq!(d["imagePushedAt"], json!(START_MILLIS as f64 / 1000.0));
    assert_eq!(
        d["lastRecordedPullTime"],
        json!((START_MILLIS + 60_000) as f64 / 1000.0)
    );
    assert_eq!(d["imageManifestMediaType"], OCI_MANIFEST);

    let got = h
        .ok("BatchGetImage", json!({"repositoryName": repo, "imageIds": [{"imageTag": "v1"}, {"imageTag": "gone"}, {}, {"imageDigest": "bad"}, {"imageTag": "v1", "imageDigest": sha256(b"x")}]}))
        .await;
    assert_eq!(got["images"][0]["imageManifest"], manifest);
    assert_eq!(got["images"][0]["imageId"]["imageDigest"], digest);
    let codes: Vec<&str> = got["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["failureCode"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "ImageNotFound",
            "MissingDigestAndTag",
            "InvalidImageDigest",
            "ImageNotFound"
        ]
    );
    assert_eq!(
        h.err(
            "BatchGetImage",
            json!({"repositoryName": "nope", "imageIds": [{"imageTag": "v1"}]})
        )
        .await,
        "RepositoryNotFoundException"
    );

    // DeleteRepository refuses a repository with images unless forced.
    assert_eq!(
        h.err("DeleteRepository", json!({"repositoryName": repo}))
            .await,
        "RepositoryNotEmptyException"
    );
    // BatchDeleteImage: by tag removes the tag; the image goes with its last tag.
    let del = h
        .ok(
            "BatchDeleteImage",
            json!({"repositoryName": repo, "imageIds": [{"imageTag": "v1"}, {"imageTag": "nope"}]}),
        )
        .await;
    assert_eq!(
        del["imageIds"],
        json!([{"imageDigest": digest, "imageTag": "v1"}])
    );
    assert_eq!(del["failures"][0]["failureCode"], "ImageNotFound");
    assert_eq!(
        h.ok("ListImages", json!({"repositoryName": repo})).await["imageIds"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    h.ok(
        "BatchDeleteImage",
        json!({"repositoryName": repo, "imageIds": [{"imageTag": "latest"}]}),
    )
    .await;
    assert_eq!(
        h.ok("ListImages", json!({"repositoryName": repo}))
            .await
            .get("imageIds"),
        None
    );
    h.ok(
        "PutImage",
        json!({"repositoryName": repo, "imageManifest": manifest}),
    )
    .await;
    let del = h
        .ok(
            "BatchDeleteImage",
            json!({"repositoryName": repo, "imageIds": [{"imageDigest": digest}]}),
        )
        .await;
    assert_eq!(del["imageIds"], json!([{"imageDigest": digest}]));
    assert_eq!(
        h.err(
            "BatchDeleteImage",
            json!({"repositoryName": "nope", "imageIds": [{"imageTag": "v1"}]})
        )
        .await,
        "RepositoryNotFoundException"
    );
    h.ok(
        "PutImage",
        json!({"repositoryName": repo, "imageManifest": manifest, "imageTag": "v1"}),
    )
    .await;
    h.ok(
        "DeleteRepository",
        json!({"repositoryName": repo, "force": true}),
    )
    .await;
    assert_eq!(
        h.err("ListImages", json!({"repositoryName": repo})).await,
        "RepositoryNotFoundException"
    );
    // A recreated repository starts empty.
    h.create("team/web").await;
    assert_eq!(
        h.ok("ListImages", json!({"repositoryName": repo}))
            .await
            .get("imageIds"),
        None
    );
}

async fn oci_push(h: &Harness, auth: &str, body: &[u8]) -> String {
    let digest = sha256(body);
    let r = h
        .oci
        .send(
            "POST",
            &format!("/v2/team/web/blobs/uploads/?digest={digest}"),
            &[("authorization", auth)],
            body.to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    digest
}

async fn oci_put(h: &Harness, auth: &str, manifest: Vec<u8>, tag: &str) -> common::Reply {
    h.oci
        .send(
            "PUT",
            &format!("/v2/team/web/manifests/{tag}"),
            &[("authorization", auth), ("content-type", OCI_MANIFEST)],
            manifest,
        )
        .await
}

async fn probe(h: &Harness, value: String) -> common::Reply {
    let headers: Vec<(&str, &str)> = if value.is_empty() {
        vec![]
    } else {
        vec![("authorization", value.as_str())]
    };
    h.oci.send("GET", "/v2/", &headers, vec![]).await
}

#[tokio::test]
async fn oci_pushes_respect_the_ecr_side() {
    let h = Harness::new();
    let auth = h.basic_auth().await;
    let a = [("authorization", auth.as_str())];
    // No CreateRepository: NAME_UNKNOWN, whether monolithic, session or mount.
    let blob = b"layer bytes";
    let r = h
        .oci
        .send(
            "POST",
            &format!("/v2/team/web/blobs/uploads/?digest={}", sha256(blob)),
            &a,
            blob.to_vec(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
    );
    let r = h
        .oci
        .send("POST", "/v2/team/web/blobs/uploads/", &a, vec![])
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
    );
    let catalog = h.oci.send("GET", "/v2/_catalog", &a, vec![]).await;
    assert_eq!(catalog.json()["repositories"], json!([]));

    h.ok(
        "CreateRepository",
        json!({"repositoryName": "team/web", "imageTagMutability": "IMMUTABLE"}),
    )
    .await;
    let config = oci_push(&h, &auth, b"{}").await;
    let layer = oci_push(&h, &auth, blob).await;
    let other = oci_push(&h, &auth, b"other layer").await;
    let m1 = image_manifest(&config, &[&layer], None);
    let m2 = image_manifest(&config, &[&other], None);
    let put = |m: Vec<u8>, tag: &'static str| oci_put(&h, &auth, m, tag);
    assert_eq!(put(m1.clone(), "v1").await.status, StatusCode::CREATED);
    // Re-pushing the same manifest under the tag is fine; moving the tag is not.
    assert_eq!(put(m1.clone(), "v1").await.status, StatusCode::CREATED);
    let r = put(m2.clone(), "v1").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "TAG_INVALID")
    );
    assert!(
        r.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("immutable"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // ... and through the ECR door the same refusal is ImageTagAlreadyExistsException.
    assert_eq!(
        h.err("PutImage", json!({"repositoryName": "team/web", "imageManifest": String::from_utf8(m2.clone()).unwrap(), "imageTag": "v1"})).await,
        "ImageTagAlreadyExistsException"
    );
    // Exclusions let matching tags move.
    h.ok("PutImageTagMutability", json!({"repositoryName": "team/web", "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION", "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD", "filter": "dev*"}]})).await;
    assert_eq!(put(m1.clone(), "dev-1").await.status, StatusCode::CREATED);
    assert_eq!(put(m2.clone(), "dev-1").await.status, StatusCode::CREATED);
    h.ok(
        "PutImageTagMutability",
        json!({"repositoryName": "team/web", "imageTagMutability": "MUTABLE"}),
    )
    .await;
    assert_eq!(put(m2.clone(), "v1").await.status, StatusCode::CREATED);

    // OCI pushes are ECR images.
    let images = h
        .ok(
            "DescribeImages",
            json!({"repositoryName": "team/web", "filter": {"tagStatus": "TAGGED"}}),
        )
        .await;
    let details = images["imageDetails"].as_array().unwrap();
    assert_eq!(details.len(), 1);
    assert_eq!(details[0]["imageDigest"], sha256(&m2));
    assert_eq!(details[0]["imageTags"], json!(["dev-1", "v1"]));
    assert_eq!(details[0]["imageSizeInBytes"], 2);
    assert!(details[0].get("lastRecordedPullTime").is_none());
    let untagged = h
        .ok(
            "ListImages",
            json!({"repositoryName": "team/web", "filter": {"tagStatus": "UNTAGGED"}}),
        )
        .await;
    assert_eq!(untagged["imageIds"], json!([{"imageDigest": sha256(&m1)}]));
    let paged = h
        .ok(
            "ListImages",
            json!({"repositoryName": "team/web", "maxResults": 1}),
        )
        .await;
    assert_eq!(paged["imageIds"].as_array().unwrap().len(), 1);
    let rest = h
        .ok(
            "ListImages",
            json!({"repositoryName": "team/web", "maxResults": 2, "nextToken": paged["nextToken"]}),
        )
        .await;
    assert_eq!(rest["imageIds"].as_array().unwrap().len(), 2);
    assert_eq!(
        h.err(
            "DescribeImages",
            json!({"repositoryName": "team/web", "imageIds": [{"imageTag": "nope"}]})
        )
        .await,
        "ImageNotFoundException"
    );
    let by_id = h
        .ok(
            "DescribeImages",
            json!({"repositoryName": "team/web", "imageIds": [{"imageDigest": sha256(&m1)}]}),
        )
        .await;
    assert!(by_id["imageDetails"][0].get("imageTags").is_none());
    assert_eq!(
        h.err("DescribeImages", json!({"repositoryName": "nope"}))
            .await,
        "RepositoryNotFoundException"
    );
    let layers = h
        .ok(
            "BatchCheckLayerAvailability",
            json!({"repositoryName": "team/web", "layerDigests": [layer]}),
        )
        .await;
    assert_eq!(layers["layers"][0]["layerAvailability"], "AVAILABLE");
}

#[tokio::test]
async fn tokens_are_valid_until_they_expire_and_survive_restarts() {
    let h = Harness::new();
    let out = h.ok("GetAuthorizationToken", json!({})).await;
    let data = &out["authorizationData"][0];
    assert_eq!(data["proxyEndpoint"], format!("http://{ADDR}"));
    assert_eq!(
        data["expiresAt"],
        json!((START_MILLIS + 12 * 3600 * 1000) as f64 / 1000.0)
    );
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(data["authorizationToken"].as_str().unwrap())
        .unwrap();
    let decoded = String::from_utf8(decoded).unwrap();
    let password = decoded.strip_prefix("AWS:").unwrap();
    assert!(!password.contains(':') && password.len() >= 32);
    let auth = format!("Basic {}", data["authorizationToken"].as_str().unwrap());

    assert_eq!(probe(&h, auth.clone()).await.status, StatusCode::OK);
    let r = probe(&h, String::new()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").starts_with("Bearer realm="));
    let wrong = format!("Basic {}", b64(b"AWS:not-the-password"));
    assert_eq!(probe(&h, wrong).await.status, StatusCode::UNAUTHORIZED);
    let wrong_user = format!("Basic {}", b64(format!("root:{password}").as_bytes()));
    assert_eq!(probe(&h, wrong_user).await.status, StatusCode::UNAUTHORIZED);

    // A restart over the same store keeps the token.
    let Harness {
        store, oci, now, ..
    } = h;
    let h = Harness::over(store, oci.dir, now);
    assert_eq!(probe(&h, auth.clone()).await.status, StatusCode::OK);

    // Expired after 12 hours.
    h.now.fetch_add(12 * 3600 * 1000 - 1, Ordering::SeqCst);
    assert_eq!(probe(&h, auth.clone()).await.status, StatusCode::OK);
    h.now.fetch_add(1, Ordering::SeqCst);
    assert_eq!(
        probe(&h, auth.clone()).await.status,
        StatusCode::UNAUTHORIZED
    );
    // A new token works; issuing it forgot the expired one.
    let fresh = h.basic_auth().await;
    assert_eq!(probe(&h, fresh).await.status, StatusCode::OK);
    let (tokens, _) = h.store.range("registry/tokens/").await.unwrap();
    assert_eq!(tokens.len(), 1);
}

#[tokio::test]
async fn unsupported_operations_and_bad_input() {
    let h = Harness::new();
    assert_eq!(
        h.err("GetRegistryPolicy", json!({})).await,
        "UnknownOperationException"
    );
    assert_eq!(
        h.err("Frobnicate", json!({})).await,
        "UnknownOperationException"
    );
    assert_eq!(
        h.err("CreateRepository", json!({})).await,
        "InvalidParameterException"
    );
    assert_eq!(
        h.err("CreateRepository", json!({"repositoryName": 5}))
            .await,
        "SerializationException"
    );
}
