//! ECR lifecycle policies: table tests of the pure evaluation, policy validation, and
//! the lifecycle operations driven in-process through `AwsService::call`, every
//! successful response checked against the botocore model's output shape and every
//! error code against the errors the model declares for the operation.

mod common;

use base64::Engine as _;
use common::{image_manifest, sha256, OCI_MANIFEST};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use wharf_aws::{AwsError, AwsService, CallContext, ServiceInput, ServiceOutput};
use wharf_registry::ecr::lifecycle::{CountRule, TagSelection};
use wharf_registry::ecr::{evaluate, parse_policy, Expiration, LifecycleImage};
use wharf_registry::{build_with, EcrService, FsBlobStore, RegistryConfig};
use wharf_store::sqlite::SqliteStore;
use wharf_store::Store;

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "000000000000";
const DAY: i64 = 24 * 60 * 60 * 1000;
const NOW: i64 = 1_700_000_000_000;
const GENERIC_ERRORS: [&str; 2] = ["SerializationException", "UnknownOperationException"];

// ---------------------------------------------------------------------------------
// Pure evaluation.

/// An image pushed `days_ago` days before [`NOW`] (plus `minutes` to order same-day
/// pushes), digest `name`.
fn img(name: &str, tags: &[&str], days_ago: i64) -> LifecycleImage {
    LifecycleImage {
        digest: name.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        pushed_at: NOW - days_ago * DAY,
    }
}

fn rule(priority: i64, selection: Value, count_type: &str, n: i64) -> Value {
    let mut sel = selection;
    sel["countType"] = json!(count_type);
    sel["countNumber"] = json!(n);
    if count_type == "sinceImagePushed" {
        sel["countUnit"] = json!("days");
    }
    json!({"rulePriority": priority, "description": format!("rule {priority}"),
           "selection": sel, "action": {"type": "expire"}})
}

fn policy(rules: Vec<Value>) -> String {
    json!({ "rules": rules }).to_string()
}

/// The (digest, rule priority) pairs the policy expires.
fn expired(rules: Vec<Value>, images: &[LifecycleImage]) -> Vec<(String, i64)> {
    let p = parse_policy(&policy(rules)).unwrap_or_else(|e| panic!("invalid policy: {e}"));
    evaluate(&p, images, NOW)
        .into_iter()
        .map(
            |Expiration {
                 digest,
                 rule_priority,
             }| (digest, rule_priority),
        )
        .collect()
}

fn pairs(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(d, p)| (d.to_string(), *p)).collect()
}

/// A table case: name, rules, expected (digest, rule priority) pairs.
type Case = (&'static str, Vec<Value>, Vec<(&'static str, i64)>);

#[test]
fn evaluation_table() {
    let untagged = json!({"tagStatus": "untagged"});
    let any = json!({"tagStatus": "any"});
    let prod_prefix = json!({"tagStatus": "tagged", "tagPrefixList": ["prod"]});
    let repo = vec![
        img("u-old", &[], 30),
        img("u-mid", &[], 10),
        img("u-new", &[], 1),
        img("prod-old", &["prod-1"], 20),
        img("prod-new", &["prod-2", "latest"], 2),
        img("dev", &["dev-1"], 40),
    ];
    let cases: Vec<Case> = vec![
        (
            "untagged count keeps the newest N",
            vec![rule(1, untagged.clone(), "imageCountMoreThan", 1)],
            vec![("u-old", 1), ("u-mid", 1)],
        ),
        (
            "untagged age",
            vec![rule(1, untagged.clone(), "sinceImagePushed", 14)],
            vec![("u-old", 1)],
        ),
        (
            "count larger than the selection expires nothing",
            vec![rule(1, untagged.clone(), "imageCountMoreThan", 10)],
            vec![],
        ),
        (
            "exactly N days is not more than N days",
            vec![rule(1, untagged.clone(), "sinceImagePushed", 10)],
            vec![("u-old", 1)],
        ),
        (
            "tagged prefix count",
            vec![rule(1, prod_prefix.clone(), "imageCountMoreThan", 1)],
            vec![("prod-old", 1)],
        ),
        (
            "tagged pattern age",
            vec![rule(
                1,
                json!({"tagStatus": "tagged", "tagPatternList": ["*-1"]}),
                "sinceImagePushed",
                15,
            )],
            vec![("dev", 1), ("prod-old", 1)],
        ),
        (
            "a prefix is not a pattern: 'prod*' as a prefix matches nothing",
            vec![rule(
                1,
                json!({"tagStatus": "tagged", "tagPrefixList": ["prod*"]}),
                "imageCountMoreThan",
                1,
            )],
            vec![],
        ),
        (
            "a pattern without wildcard matches the whole tag only",
            vec![rule(
                1,
                json!({"tagStatus": "tagged", "tagPatternList": ["prod"]}),
                "sinceImagePushed",
                1,
            )],
            vec![],
        ),
        (
            "every pattern must match some tag",
            vec![rule(
                1,
                json!({"tagStatus": "tagged", "tagPatternList": ["prod-*", "lat*t"]}),
                "sinceImagePushed",
                1,
            )],
            vec![("prod-new", 1)],
        ),
        (
            "any count counts every image",
            vec![rule(1, any.clone(), "imageCountMoreThan", 3)],
            vec![("dev", 1), ("u-old", 1), ("prod-old", 1)],
        ),
        (
            "images selected by a higher rule are protected from 'any'",
            vec![
                rule(1, prod_prefix.clone(), "imageCountMoreThan", 100),
                rule(2, any.clone(), "imageCountMoreThan", 1),
            ],
            // 'any' keeps u-new (the newest of all); prod images are protected.
            vec![("dev", 2), ("u-old", 2), ("u-mid", 2)],
        ),
        (
            "priority order, not list order",
            vec![
                rule(5, any.clone(), "sinceImagePushed", 5),
                rule(2, untagged.clone(), "imageCountMoreThan", 5),
            ],
            // Untagged images are claimed by rule 2 (which expires none).
            vec![("dev", 5), ("prod-old", 5)],
        ),
        (
            "an untagged rule does not protect tagged images",
            vec![
                rule(1, untagged.clone(), "imageCountMoreThan", 5),
                rule(2, any.clone(), "sinceImagePushed", 15),
            ],
            vec![("dev", 2), ("prod-old", 2)],
        ),
    ];
    for (name, rules, want) in cases {
        assert_eq!(expired(rules, &repo), pairs(&want), "{name}");
    }
}

/// ECR's documented "Example A": rules still count images a higher rule selected, but
/// never expire them.
#[test]
fn one_rule_per_image_example_a() {
    let images = [
        img("A", &["beta-1", "prod-1"], 10),
        img("B", &["beta-2", "prod-2"], 9),
        img("C", &["beta-3"], 8),
    ];
    let rules = vec![
        rule(
            1,
            json!({"tagStatus": "tagged", "tagPrefixList": ["prod"]}),
            "imageCountMoreThan",
            1,
        ),
        rule(
            2,
            json!({"tagStatus": "tagged", "tagPrefixList": ["beta"]}),
            "imageCountMoreThan",
            1,
        ),
    ];
    assert_eq!(expired(rules, &images), pairs(&[("A", 1)]));
}

/// ECR's documented "Example B": a multi-prefix rule needs every prefix.
#[test]
fn one_rule_per_image_example_b() {
    let images = [
        img("A", &["beta-1", "prod-1"], 10),
        img("B", &["beta-2", "prod-2"], 9),
        img("C", &["beta-3", "prod-3"], 8),
    ];
    let rules = vec![
        rule(
            1,
            json!({"tagStatus": "tagged", "tagPrefixList": ["beta", "prod"]}),
            "imageCountMoreThan",
            1,
        ),
        rule(
            2,
            json!({"tagStatus": "tagged", "tagPrefixList": ["beta"]}),
            "imageCountMoreThan",
            1,
        ),
    ];
    assert_eq!(expired(rules, &images), pairs(&[("A", 1), ("B", 1)]));
}

#[test]
fn parsed_policy_is_sorted_and_typed() {
    let p = parse_policy(&policy(vec![
        rule(9, json!({"tagStatus": "any"}), "sinceImagePushed", 30),
        rule(
            3,
            json!({"tagStatus": "tagged", "tagPatternList": ["v*"]}),
            "imageCountMoreThan",
            2,
        ),
    ]))
    .unwrap();
    assert_eq!(p.rules[0].priority, 3);
    assert_eq!(
        p.rules[0].selection,
        TagSelection::TaggedPatterns(vec!["v*".into()])
    );
    assert_eq!(p.rules[0].count, CountRule::ImageCountMoreThan(2));
    assert_eq!(p.rules[1].selection, TagSelection::Any);
    assert_eq!(p.rules[1].count, CountRule::SinceImagePushedDays(30));
}

#[test]
fn validation_errors() {
    let tagged = |list: Value| {
        let mut s = json!({"tagStatus": "tagged"});
        for (k, v) in list.as_object().unwrap() {
            s[k] = v.clone();
        }
        s
    };
    let untagged = json!({"tagStatus": "untagged"});
    let any = json!({"tagStatus": "any"});
    let bad: Vec<(&str, String)> = vec![
        ("not json", "{rules".into()),
        ("no rules key", json!({}).to_string()),
        ("empty rules", policy(vec![])),
        (
            "duplicate priority",
            policy(vec![
                rule(1, untagged.clone(), "imageCountMoreThan", 1),
                rule(
                    1,
                    tagged(json!({"tagPrefixList": ["a"]})),
                    "imageCountMoreThan",
                    1,
                ),
            ]),
        ),
        (
            "any not last",
            policy(vec![
                rule(1, any.clone(), "imageCountMoreThan", 1),
                rule(2, untagged.clone(), "imageCountMoreThan", 1),
            ]),
        ),
        (
            "two untagged rules",
            policy(vec![
                rule(1, untagged.clone(), "imageCountMoreThan", 1),
                rule(2, untagged.clone(), "sinceImagePushed", 1),
            ]),
        ),
        (
            "tagged without list",
            policy(vec![rule(1, tagged(json!({})), "imageCountMoreThan", 1)]),
        ),
        (
            "tagged with empty list",
            policy(vec![rule(
                1,
                tagged(json!({"tagPrefixList": []})),
                "imageCountMoreThan",
                1,
            )]),
        ),
        (
            "tagged with both lists",
            policy(vec![rule(
                1,
                tagged(json!({"tagPrefixList": ["a"], "tagPatternList": ["a*"]})),
                "imageCountMoreThan",
                1,
            )]),
        ),
        (
            "five wildcards",
            policy(vec![rule(
                1,
                tagged(json!({"tagPatternList": ["*a*b*c*d*"]})),
                "imageCountMoreThan",
                1,
            )]),
        ),
        (
            "untagged with a list",
            policy(vec![rule(
                1,
                json!({"tagStatus": "untagged", "tagPrefixList": ["a"]}),
                "imageCountMoreThan",
                1,
            )]),
        ),
        (
            "bad tag status",
            policy(vec![rule(
                1,
                json!({"tagStatus": "TAGGED"}),
                "imageCountMoreThan",
                1,
            )]),
        ),
        (
            "zero count",
            policy(vec![rule(1, untagged.clone(), "imageCountMoreThan", 0)]),
        ),
        (
            "zero priority",
            policy(vec![rule(0, untagged.clone(), "imageCountMoreThan", 1)]),
        ),
        (
            "unknown count type",
            policy(vec![rule(1, untagged.clone(), "sinceImagePulled", 1)]),
        ),
        (
            "countUnit with a count rule",
            json!({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged",
                "countType": "imageCountMoreThan", "countUnit": "days", "countNumber": 1},
                "action": {"type": "expire"}}]})
            .to_string(),
        ),
        (
            "no countUnit with an age rule",
            json!({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged",
                "countType": "sinceImagePushed", "countNumber": 1},
                "action": {"type": "expire"}}]})
            .to_string(),
        ),
        (
            "hours",
            json!({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged",
                "countType": "sinceImagePushed", "countUnit": "hours", "countNumber": 1},
                "action": {"type": "expire"}}]})
            .to_string(),
        ),
        (
            "other action",
            json!({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged",
                "countType": "imageCountMoreThan", "countNumber": 1},
                "action": {"type": "transition"}}]})
            .to_string(),
        ),
        (
            "no action",
            json!({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "untagged",
                "countType": "imageCountMoreThan", "countNumber": 1}}]})
            .to_string(),
        ),
    ];
    for (name, text) in bad {
        assert!(parse_policy(&text).is_err(), "{name} should be invalid");
    }
    // Four wildcards are fine, as are a count rule and an age rule side by side.
    parse_policy(&policy(vec![
        rule(
            1,
            tagged(json!({"tagPatternList": ["*test*1*2*3", "test*1*2*3*"]})),
            "imageCountMoreThan",
            1,
        ),
        rule(2, untagged, "sinceImagePushed", 1),
        rule(3, any, "imageCountMoreThan", 1),
    ]))
    .unwrap();
}

// ---------------------------------------------------------------------------------
// The operations, in-process.

struct Harness {
    ecr: Arc<EcrService>,
    now: Arc<AtomicI64>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new() -> Self {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let blobs = Arc::new(FsBlobStore::new(dir.path()).unwrap());
        let now = Arc::new(AtomicI64::new(NOW));
        let clock_now = now.clone();
        let registry = build_with(
            store,
            blobs,
            RegistryConfig {
                region: REGION.into(),
                account_id: ACCOUNT.into(),
                registry_addr: "127.0.0.1:5000".into(),
            },
            Arc::new(move || clock_now.load(Ordering::SeqCst)),
        );
        Harness {
            ecr: registry.ecr,
            now,
            _dir: dir,
        }
    }

    async fn call(&self, op: &str, input: Value) -> Result<Value, AwsError> {
        let ctx = CallContext {
            request_id: "req".into(),
            region: REGION.into(),
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
        self.call(op, input.clone())
            .await
            .unwrap_or_else(|e| panic!("{op} failed: {e} (input {input})"))
    }

    async fn err(&self, op: &str, input: Value) -> String {
        match self.call(op, input.clone()).await {
            Ok(v) => panic!("{op} should have failed (input {input}): {v:#}"),
            Err(e) => {
                assert!(!e.message.is_empty());
                e.code
            }
        }
    }

    async fn upload(&self, repo: &str, bytes: &[u8]) -> String {
        let up = self
            .ok("InitiateLayerUpload", json!({"repositoryName": repo}))
            .await;
        let id = up["uploadId"].as_str().unwrap().to_string();
        self.ok(
            "UploadLayerPart",
            json!({
                "repositoryName": repo, "uploadId": id,
                "partFirstByte": 0, "partLastByte": bytes.len() - 1,
                "layerPartBlob": base64::engine::general_purpose::STANDARD.encode(bytes),
            }),
        )
        .await;
        let digest = sha256(bytes);
        self.ok(
            "CompleteLayerUpload",
            json!({"repositoryName": repo, "uploadId": id, "layerDigests": [digest]}),
        )
        .await;
        digest
    }

    /// Pushes a distinct image `days_ago` days before [`NOW`] with `tags` (the first
    /// through PutImage, the rest as extra PutImage calls); returns its digest.
    async fn push(&self, repo: &str, seed: &str, tags: &[&str], days_ago: i64) -> String {
        self.now.store(NOW - days_ago * DAY, Ordering::SeqCst);
        let config = self
            .upload(repo, format!("{{\"seed\":\"{seed}\"}}").as_bytes())
            .await;
        let layer = self.upload(repo, format!("layer {seed}").as_bytes()).await;
        let manifest = String::from_utf8(image_manifest(&config, &[&layer], None)).unwrap();
        let mut input = json!({"repositoryName": repo, "imageManifest": manifest,
                               "imageManifestMediaType": OCI_MANIFEST});
        if let Some(first) = tags.first() {
            input["imageTag"] = json!(first);
        }
        self.ok("PutImage", input.clone()).await;
        for t in tags.iter().skip(1) {
            input["imageTag"] = json!(t);
            self.ok("PutImage", input.clone()).await;
        }
        self.now.store(NOW, Ordering::SeqCst);
        sha256(manifest.as_bytes())
    }

    async fn digests(&self, repo: &str) -> Vec<String> {
        let out = self
            .ok("DescribeImages", json!({"repositoryName": repo}))
            .await;
        let mut d: Vec<String> = out["imageDetails"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["imageDigest"].as_str().unwrap().to_string())
            .collect();
        d.sort();
        d
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[tokio::test]
async fn put_get_delete_policy() {
    let h = Harness::new();
    let repo = json!({"repositoryName": "app"});
    h.ok("CreateRepository", repo.clone()).await;
    let text = policy(vec![rule(
        1,
        json!({"tagStatus": "untagged"}),
        "imageCountMoreThan",
        1,
    )]);

    assert_eq!(
        h.err("GetLifecyclePolicy", repo.clone()).await,
        "LifecyclePolicyNotFoundException"
    );
    assert_eq!(
        h.err("DeleteLifecyclePolicy", repo.clone()).await,
        "LifecyclePolicyNotFoundException"
    );
    assert_eq!(
        h.err(
            "PutLifecyclePolicy",
            json!({"repositoryName": "nope", "lifecyclePolicyText": text})
        )
        .await,
        "RepositoryNotFoundException"
    );
    assert_eq!(
        h.err("GetLifecyclePolicy", json!({"repositoryName": "nope"}))
            .await,
        "RepositoryNotFoundException"
    );
    // Invalid documents: too short for the model, or failing validation.
    assert_eq!(
        h.err(
            "PutLifecyclePolicy",
            json!({"repositoryName": "app", "lifecyclePolicyText": "{}"})
        )
        .await,
        "InvalidParameterException"
    );
    let any_first = policy(vec![
        rule(1, json!({"tagStatus": "any"}), "imageCountMoreThan", 1),
        rule(2, json!({"tagStatus": "untagged"}), "imageCountMoreThan", 1),
    ]);
    assert_eq!(
        h.err(
            "PutLifecyclePolicy",
            json!({"repositoryName": "app", "lifecyclePolicyText": any_first})
        )
        .await,
        "InvalidParameterException"
    );

    let put = h
        .ok(
            "PutLifecyclePolicy",
            json!({"repositoryName": "app", "lifecyclePolicyText": text}),
        )
        .await;
    assert_eq!(put["lifecyclePolicyText"], text);
    assert_eq!(put["registryId"], ACCOUNT);
    assert_eq!(put["repositoryName"], "app");
    let got = h.ok("GetLifecyclePolicy", repo.clone()).await;
    assert_eq!(got["lifecyclePolicyText"], text);
    assert!(got.get("lastEvaluatedAt").is_none());

    let deleted = h.ok("DeleteLifecyclePolicy", repo.clone()).await;
    assert_eq!(deleted["lifecyclePolicyText"], text);
    assert_eq!(
        h.err("GetLifecyclePolicy", repo.clone()).await,
        "LifecyclePolicyNotFoundException"
    );

    // A repository's policy goes with it.
    h.ok(
        "PutLifecyclePolicy",
        json!({"repositoryName": "app", "lifecyclePolicyText": text}),
    )
    .await;
    h.ok("DeleteRepository", repo.clone()).await;
    h.ok("CreateRepository", repo.clone()).await;
    assert_eq!(
        h.err("GetLifecyclePolicy", repo).await,
        "LifecyclePolicyNotFoundException"
    );
}

#[tokio::test]
async fn preview_and_apply() {
    let h = Harness::new();
    h.ok("CreateRepository", json!({"repositoryName": "app"}))
        .await;
    h.ok("CreateRepository", json!({"repositoryName": "other"}))
        .await;
    let u_old = h.push("app", "u-old", &[], 30).await;
    let u_mid = h.push("app", "u-mid", &[], 20).await;
    let u_new = h.push("app", "u-new", &[], 1).await;
    let prod_old = h.push("app", "prod-old", &["prod-1", "old"], 50).await;
    let prod_new = h.push("app", "prod-new", &["prod-2"], 2).await;
    let dev = h.push("app", "dev", &["dev-1"], 40).await;
    let other = h.push("other", "other", &[], 100).await;

    let repo = json!({"repositoryName": "app"});
    assert_eq!(
        h.err("StartLifecyclePolicyPreview", repo.clone()).await,
        "LifecyclePolicyNotFoundException"
    );
    assert_eq!(
        h.err("GetLifecyclePolicyPreview", repo.clone()).await,
        "LifecyclePolicyPreviewNotFoundException"
    );
    assert_eq!(
        h.err(
            "StartLifecyclePolicyPreview",
            json!({"repositoryName": "nope"})
        )
        .await,
        "RepositoryNotFoundException"
    );

    let text = policy(vec![
        rule(
            1,
            json!({"tagStatus": "tagged", "tagPatternList": ["prod-*"]}),
            "imageCountMoreThan",
            1,
        ),
        rule(2, json!({"tagStatus": "untagged"}), "sinceImagePushed", 14),
        rule(3, json!({"tagStatus": "any"}), "imageCountMoreThan", 4),
    ]);
    h.ok(
        "PutLifecyclePolicy",
        json!({"repositoryName": "app", "lifecyclePolicyText": text}),
    )
    .await;

    let started = h.ok("StartLifecyclePolicyPreview", repo.clone()).await;
    assert_eq!(started["status"], "COMPLETE");
    assert_eq!(started["lifecyclePolicyText"], text);

    let preview = h.ok("GetLifecyclePolicyPreview", repo.clone()).await;
    assert_eq!(preview["status"], "COMPLETE");
    assert_eq!(preview["summary"]["expiringImageTotalCount"], 4);
    let results = preview["previewResults"].as_array().unwrap();
    let got: Vec<(String, i64)> = results
        .iter()
        .map(|r| {
            assert_eq!(r["action"]["type"], "EXPIRE");
            (
                r["imageDigest"].as_str().unwrap().to_string(),
                r["appliedRulePriority"].as_i64().unwrap(),
            )
        })
        .collect();
    // Oldest first: prod-old (rule 1), dev (rule 3 keeps the newest four;
    // prod-old, sixth, is rule 1's), u-old and
    // u-mid (rule 2).
    assert_eq!(
        got,
        vec![
            (prod_old.clone(), 1),
            (dev.clone(), 3),
            (u_old.clone(), 2),
            (u_mid.clone(), 2)
        ]
    );
    assert_eq!(results[0]["imageTags"], json!(["old", "prod-1"]));
    assert_eq!(
        results[0]["imagePushedAt"],
        json!((NOW - 50 * DAY) as f64 / 1000.0)
    );
    assert!(results[2].get("imageTags").is_none());

    // Paging and filters.
    let p1 = h
        .ok(
            "GetLifecyclePolicyPreview",
            json!({"repositoryName": "app", "maxResults": 3}),
        )
        .await;
    assert_eq!(p1["previewResults"].as_array().unwrap().len(), 3);
    let p2 = h
        .ok(
            "GetLifecyclePolicyPreview",
            json!({"repositoryName": "app", "maxResults": 3, "nextToken": p1["nextToken"]}),
        )
        .await;
    assert_eq!(p2["previewResults"][0]["imageDigest"], json!(u_mid));
    assert!(p2.get("nextToken").is_none());
    let tagged = h
        .ok(
            "GetLifecyclePolicyPreview",
            json!({"repositoryName": "app", "filter": {"tagStatus": "TAGGED"}}),
        )
        .await;
    assert_eq!(tagged["previewResults"].as_array().unwrap().len(), 2);
    assert_eq!(tagged["summary"]["expiringImageTotalCount"], 4);
    let by_id = h
        .ok(
            "GetLifecyclePolicyPreview",
            json!({"repositoryName": "app", "imageIds": [{"imageTag": "dev-1"}, {"imageDigest": u_old}]}),
        )
        .await;
    assert_eq!(by_id["previewResults"].as_array().unwrap().len(), 2);
    assert_eq!(
        h.err(
            "GetLifecyclePolicyPreview",
            json!({"repositoryName": "app", "imageIds": [{"imageTag": "dev-1"}], "maxResults": 1}),
        )
        .await,
        "InvalidParameterException"
    );
    assert_eq!(
        h.err(
            "GetLifecyclePolicyPreview",
            json!({"repositoryName": "app", "maxResults": 101}),
        )
        .await,
        "InvalidParameterException"
    );

    // A preview of a policy given in the request, not the stored one.
    let keep_one = policy(vec![rule(
        1,
        json!({"tagStatus": "any"}),
        "imageCountMoreThan",
        1,
    )]);
    let started = h
        .ok(
            "StartLifecyclePolicyPreview",
            json!({"repositoryName": "app", "lifecyclePolicyText": keep_one}),
        )
        .await;
    assert_eq!(started["lifecyclePolicyText"], keep_one);
    let preview = h.ok("GetLifecyclePolicyPreview", repo.clone()).await;
    assert_eq!(preview["summary"]["expiringImageTotalCount"], 5);
    let bad = policy(vec![rule(
        1,
        json!({"tagStatus": "tagged"}),
        "imageCountMoreThan",
        1,
    )]);
    assert_eq!(
        h.err(
            "StartLifecyclePolicyPreview",
            json!({"repositoryName": "app", "lifecyclePolicyText": bad}),
        )
        .await,
        "InvalidParameterException"
    );

    // Previews change nothing.
    assert_eq!(h.digests("app").await.len(), 6);

    // Apply: the stored policy's images go, with their tags; "other" has no policy.
    let runs = h.ecr.apply_lifecycle_policies(NOW).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].repository, "app");
    assert_eq!(runs[0].expired.len(), 4);
    assert_eq!(
        h.digests("app").await,
        sorted(vec![u_new.clone(), prod_new.clone()])
    );
    assert_eq!(h.digests("other").await, vec![other]);
    let listed = h.ok("ListImages", json!({"repositoryName": "app"})).await;
    let ids = listed["imageIds"].as_array().unwrap();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&json!({"imageDigest": prod_new, "imageTag": "prod-2"})));
    assert!(ids.contains(&json!({"imageDigest": u_new})));
    let got = h.ok("GetLifecyclePolicy", repo.clone()).await;
    assert_eq!(got["lastEvaluatedAt"], json!(NOW as f64 / 1000.0));

    // Applying again later: u-new ages past 14 days.
    let later = NOW + 14 * DAY;
    let runs = h.ecr.apply_lifecycle_policies(later).await.unwrap();
    assert_eq!(
        runs[0].expired,
        vec![Expiration {
            digest: u_new,
            rule_priority: 2
        }]
    );
    assert_eq!(h.digests("app").await, vec![prod_new]);
    let got = h.ok("GetLifecyclePolicy", repo).await;
    assert_eq!(got["lastEvaluatedAt"], json!(later as f64 / 1000.0));
}
