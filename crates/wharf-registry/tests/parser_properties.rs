//! Property tests of the registry's edge parsers through the crate's public API:
//! digests (`Digest: FromStr + Display`), repository names and tags
//! (`names::is_valid_repository` / `names::is_valid_tag`, checked against the `regex`
//! crate as an oracle of the OCI and ECR grammars) and manifests
//! (`manifest::parse_manifest`, fed generated OCI image manifests, OCI indexes, Docker
//! schema 2 manifests and manifest lists, then truncated or corrupted copies of them).

use proptest::prelude::*;
use regex::Regex;
use serde_json::{json, Value};
use std::sync::OnceLock;
use wharf_registry::manifest::{
    parse_manifest, ReferenceKind, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST,
};
use wharf_registry::names::{is_valid_repository, is_valid_tag};
use wharf_registry::{Algorithm, Digest};

// ---- oracles -----------------------------------------------------------------------

/// The OCI distribution repository-name grammar, written independently of names.rs.
const OCI_NAME: &str = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*";
/// The OCI tag grammar.
const OCI_TAG: &str = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}";

fn anchored(pattern: &'static str, cell: &'static OnceLock<Regex>) -> &'static Regex {
    cell.get_or_init(|| Regex::new(&format!("^(?:{pattern})$")).expect("oracle regex"))
}

fn name_oracle(name: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    // ECR: repository names are 2 to 256 characters.
    anchored(OCI_NAME, &RE).is_match(name) && (2..=256).contains(&name.len())
}

fn tag_oracle(tag: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    anchored(OCI_TAG, &RE).is_match(tag)
}

fn digest_oracle(s: &str) -> bool {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$").unwrap())
        .is_match(s)
}

// ---- digests -----------------------------------------------------------------------

fn valid_digest() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}")),
        "[0-9a-f]{128}".prop_map(|h| format!("sha512:{h}")),
    ]
}

/// A valid digest whose hex part has at least one letter, so upper-casing changes it.
fn valid_digest_with_letter() -> impl Strategy<Value = (String, usize)> {
    valid_digest().prop_flat_map(|d| {
        let colon = d.find(':').unwrap();
        let len = d.len();
        (Just(d), (colon + 1)..len)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_strings_parse_as_digests_exactly_when_the_oracle_says(s in any::<String>()) {
        prop_assert_eq!(s.parse::<Digest>().is_ok(), digest_oracle(&s), "{:?}", s);
    }

    #[test]
    fn near_digests_parse_exactly_when_the_oracle_says(
        s in "(sha256|sha512|sha384|SHA256|md5|)(:|;|)[0-9a-fA-FgG]{62,130}"
    ) {
        prop_assert_eq!(s.parse::<Digest>().is_ok(), digest_oracle(&s), "{:?}", s);
    }

    #[test]
    fn valid_digests_round_trip(s in valid_digest()) {
        let d: Digest = s.parse().expect("valid digest refused");
        prop_assert_eq!(d.to_string(), s.clone());
        let (alg, hex) = s.split_once(':').unwrap();
        prop_assert_eq!(d.algorithm().name(), alg);
        prop_assert_eq!(d.hex(), hex);
        prop_assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn computed_digests_round_trip(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let d = Digest::of(alg, &bytes);
            prop_assert!(digest_oracle(&d.to_string()));
            prop_assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        }
    }

    #[test]
    fn upper_case_hex_is_refused((s, at) in valid_digest_with_letter()) {
        // Upper-case one hex digit (a digit stays a digit, so pick the next letter).
        let bytes = s.as_bytes();
        let pos = (at..bytes.len()).chain(s.find(':').unwrap() + 1..at)
            .find(|&i| bytes[i].is_ascii_lowercase());
        prop_assume!(pos.is_some());
        let pos = pos.unwrap();
        let mut mutated = s.clone().into_bytes();
        mutated[pos] = mutated[pos].to_ascii_uppercase();
        let mutated = String::from_utf8(mutated).unwrap();
        prop_assert!(mutated.parse::<Digest>().is_err(), "{}", mutated);
        // And the whole hex upper-cased.
        let (alg, hex) = s.split_once(':').unwrap();
        let upper = format!("{alg}:{}", hex.to_ascii_uppercase());
        prop_assert!(upper.parse::<Digest>().is_err(), "{}", upper);
    }

    #[test]
    fn wrong_length_is_refused(s in valid_digest(), extra in "[0-9a-f]{1,70}", cut in 1usize..64) {
        let longer = format!("{s}{extra}");
        prop_assert!(longer.parse::<Digest>().is_err(), "{}", longer);
        let shorter = &s[..s.len() - cut];
        prop_assert!(shorter.parse::<Digest>().is_err(), "{}", shorter);
        // sha256 hex under sha512 and the reverse.
        let (alg, hex) = s.split_once(':').unwrap();
        let other = if alg == "sha256" { "sha512" } else { "sha256" };
        let swapped = format!("{other}:{hex}");
        prop_assert!(swapped.parse::<Digest>().is_err(), "{}", swapped);
    }

    #[test]
    fn unknown_algorithms_are_refused(alg in "[a-zA-Z0-9+._-]{0,12}", hex in "[0-9a-f]{64}") {
        prop_assume!(alg != "sha256" && alg != "sha512");
        let s = format!("{alg}:{hex}");
        prop_assert!(s.parse::<Digest>().is_err(), "{}", s);
    }

    #[test]
    fn a_missing_colon_is_refused(s in valid_digest(), sep in "[;=_/ ]?") {
        let without = s.replacen(':', &sep, 1);
        prop_assert!(without.parse::<Digest>().is_err(), "{}", without);
    }
}

// ---- repository names and tags -----------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn generated_oci_names_are_accepted_within_ecr_limits(name in OCI_NAME) {
        prop_assert_eq!(is_valid_repository(&name), (2..=256).contains(&name.len()), "{:?}", name);
        prop_assert!(name_oracle(&name) == is_valid_repository(&name));
    }

    #[test]
    fn near_names_agree_with_the_oracle(name in "[a-zA-Z0-9._/-]{0,24}") {
        prop_assert_eq!(is_valid_repository(&name), name_oracle(&name), "{:?}", name);
    }

    #[test]
    fn long_names_agree_with_the_oracle(
        parts in prop::collection::vec("[a-z0-9]{1,40}", 1..12),
        seps in prop::collection::vec(prop::sample::select(vec!["/", ".", "_", "__", "---", ".."]), 12),
    ) {
        let mut name = parts[0].clone();
        for (part, sep) in parts[1..].iter().zip(&seps) {
            name.push_str(sep);
            name.push_str(part);
        }
        prop_assert_eq!(is_valid_repository(&name), name_oracle(&name), "{:?} ({})", name, name.len());
    }

    #[test]
    fn names_around_the_length_limits_agree_with_the_oracle(
        base in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,3}",
        len in prop_oneof![0usize..4, 250usize..262, 0usize..300],
    ) {
        // Pad a valid name with letters (or cut it) to exactly `len` bytes.
        let mut name = base.clone();
        while name.len() < len {
            name.push('a');
        }
        name.truncate(len);
        prop_assert_eq!(is_valid_repository(&name), name_oracle(&name), "{:?} ({})", name, name.len());
        if !name.ends_with('/') && !name.is_empty() {
            prop_assert_eq!(is_valid_repository(&name), (2..=256).contains(&len), "{}", len);
        }
    }

    #[test]
    fn arbitrary_names_agree_with_the_oracle(name in any::<String>()) {
        prop_assert_eq!(is_valid_repository(&name), name_oracle(&name), "{:?}", name);
    }

    #[test]
    fn broken_names_are_refused(name in OCI_NAME, how in 0u8..6) {
        let broken = match how {
            0 => format!("{name}/../x"),
            1 => format!("/{name}"),
            2 => format!("{name}/"),
            3 => format!("{name}//x"),
            4 => format!("{}X", name),
            _ => format!("x..{name}"),
        };
        prop_assert!(!is_valid_repository(&broken), "{:?}", broken);
        prop_assert!(!name_oracle(&broken));
    }

    #[test]
    fn generated_tags_are_accepted(tag in OCI_TAG) {
        prop_assert!(is_valid_tag(&tag), "{:?}", tag);
    }

    #[test]
    fn near_tags_agree_with_the_oracle(tag in "[a-zA-Z0-9._:/@ -]{0,10}|[a-z._-]{120,135}") {
        prop_assert_eq!(is_valid_tag(&tag), tag_oracle(&tag), "{:?}", tag);
    }

    #[test]
    fn arbitrary_tags_agree_with_the_oracle(tag in any::<String>()) {
        prop_assert_eq!(is_valid_tag(&tag), tag_oracle(&tag), "{:?}", tag);
    }
}

// ---- manifests -----------------------------------------------------------------------

/// A generated manifest document and what the parser must report for it.
#[derive(Debug, Clone)]
struct Generated {
    doc: Value,
    media_type: &'static str,
    /// Expected references, in document order.
    references: Vec<(Digest, ReferenceKind)>,
    /// Whether `mediaType` is written in the document.
    declares_media_type: bool,
}

fn digest() -> impl Strategy<Value = Digest> {
    valid_digest().prop_map(|s| s.parse().unwrap())
}

fn descriptor(media_type: &'static str, d: &Digest, size: u64) -> Value {
    json!({"mediaType": media_type, "digest": d.to_string(), "size": size})
}

fn image_manifest(docker: bool) -> impl Strategy<Value = Generated> {
    (
        digest(),
        // (digest, size, foreign: has `urls`)
        prop::collection::vec((digest(), 0u64..1 << 40, prop::bool::weighted(0.15)), 0..8),
        any::<bool>(),
        prop::option::of(digest()),
    )
        .prop_map(move |(config, layers, declare, subject)| {
            let media_type = if docker {
                DOCKER_MANIFEST
            } else {
                OCI_MANIFEST
            };
            // Docker schema 2 always names its media type; OCI may leave it out.
            let declare = docker || declare;
            let mut references = vec![(config.clone(), ReferenceKind::Blob)];
            let layer_docs: Vec<Value> = layers
                .iter()
                .map(|(d, size, foreign)| {
                    let mut l = descriptor("application/vnd.oci.image.layer.v1.tar+gzip", d, *size);
                    if *foreign {
                        l["urls"] = json!(["https://example.invalid/layer"]);
                    } else {
                        references.push((d.clone(), ReferenceKind::Blob));
                    }
                    l
                })
                .collect();
            let mut doc = json!({
                "schemaVersion": 2,
                "config": descriptor("application/vnd.oci.image.config.v1+json", &config, 7),
                "layers": layer_docs,
            });
            if declare {
                doc["mediaType"] = json!(media_type);
            }
            if let (Some(s), false) = (&subject, docker) {
                doc["subject"] = descriptor(OCI_MANIFEST, s, 10);
            }
            Generated {
                doc,
                media_type,
                references,
                declares_media_type: declare,
            }
        })
}

fn index(docker: bool) -> impl Strategy<Value = Generated> {
    (prop::collection::vec(digest(), 0..8), any::<bool>()).prop_map(move |(children, declare)| {
        let media_type = if docker { DOCKER_LIST } else { OCI_INDEX };
        let declare = docker || declare;
        let child_type = if docker {
            DOCKER_MANIFEST
        } else {
            OCI_MANIFEST
        };
        let manifests: Vec<Value> = children
            .iter()
            .map(|d| {
                let mut m = descriptor(child_type, d, 500);
                m["platform"] = json!({"architecture": "amd64", "os": "linux"});
                m
            })
            .collect();
        let mut doc = json!({"schemaVersion": 2, "manifests": manifests});
        if declare {
            doc["mediaType"] = json!(media_type);
        }
        let references = children
            .into_iter()
            .map(|d| (d, ReferenceKind::Manifest))
            .collect();
        Generated {
            doc,
            media_type,
            references,
            declares_media_type: declare,
        }
    })
}

fn any_manifest() -> impl Strategy<Value = Generated> {
    prop_oneof![
        image_manifest(false),
        image_manifest(true),
        index(false),
        index(true)
    ]
}

/// Ways to break a required part of a generated manifest.
fn corrupt(g: &Generated, how: u8, pick: usize) -> Option<Value> {
    let mut doc = g.doc.clone();
    let obj = doc.as_object_mut().unwrap();
    let is_index = obj.contains_key("manifests");
    match how {
        0 => {
            obj.remove("schemaVersion");
        }
        1 => {
            obj.insert("schemaVersion".into(), json!(1));
        }
        2 => {
            obj.insert("schemaVersion".into(), json!("2"));
        }
        3 => {
            // Remove the required list / config.
            if is_index {
                obj.remove("manifests");
            } else {
                obj.remove("config");
            }
        }
        4 => {
            // Make the required list / config the wrong type.
            if is_index {
                obj.insert("manifests".into(), json!({"digest": "x"}));
            } else {
                obj.insert("config".into(), json!("sha256:00"));
            }
        }
        5 => {
            // Corrupt one referenced digest (config or a layer, or a child).
            let list = if is_index { "manifests" } else { "layers" };
            let target = match obj.get_mut(list).and_then(Value::as_array_mut) {
                Some(items) if !items.is_empty() => {
                    let n = items.len();
                    &mut items[pick % n]
                }
                _ if !is_index => obj.get_mut("config").unwrap(),
                _ => return None,
            };
            let d = target["digest"].as_str().unwrap().to_string();
            let bad = match pick % 4 {
                0 => d.to_ascii_uppercase(),
                1 => d[..d.len() - 1].to_string(),
                2 => d.replacen(':', "", 1),
                _ => d.replacen("sha", "md", 1),
            };
            target["digest"] = json!(bad);
        }
        6 => {
            // Drop a descriptor's digest.
            if is_index {
                let items = obj.get_mut("manifests").unwrap().as_array_mut().unwrap();
                if items.is_empty() {
                    return None;
                }
                let n = items.len();
                items[pick % n].as_object_mut().unwrap().remove("digest");
            } else {
                obj.get_mut("config")
                    .unwrap()
                    .as_object_mut()
                    .unwrap()
                    .remove("digest");
            }
        }
        _ => {
            obj.insert(
                "mediaType".into(),
                json!("application/vnd.example.unknown+json"),
            );
        }
    }
    Some(doc)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..512),
        ct in prop::option::of(prop::sample::select(vec![
            OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, "application/json", "", ";", "x/y"
        ])),
    ) {
        let _ = parse_manifest(&body, ct);
    }

    #[test]
    fn arbitrary_json_never_panics(
        doc in arbitrary_json(),
        ct in prop::option::of(prop::sample::select(vec![OCI_MANIFEST, OCI_INDEX, DOCKER_LIST])),
    ) {
        let _ = parse_manifest(doc.to_string().as_bytes(), ct);
    }

    #[test]
    fn generated_manifests_report_exactly_their_references(
        g in any_manifest(), with_header in any::<bool>(), charset in any::<bool>(),
    ) {
        let body = serde_json::to_vec(&g.doc).unwrap();
        let header = if charset {
            format!("{}; charset=utf-8", g.media_type)
        } else {
            g.media_type.to_string()
        };
        let ct = (with_header || !g.declares_media_type).then_some(header.as_str());
        let parsed = parse_manifest(&body, ct)
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", g.doc)))?;
        prop_assert_eq!(parsed.media_type.as_str(), g.media_type);
        prop_assert_eq!(&parsed.references, &g.references);
        let expected_subject = g.doc.get("subject").map(|s| s["digest"].as_str().unwrap().parse::<Digest>().unwrap());
        prop_assert_eq!(parsed.subject, expected_subject);
        // Pretty-printing does not change what it means.
        let pretty = serde_json::to_vec_pretty(&g.doc).unwrap();
        let again = parse_manifest(&pretty, ct).unwrap();
        prop_assert_eq!(again.references, g.references);
    }

    #[test]
    fn a_conflicting_content_type_is_refused(g in any_manifest(), other in prop::sample::select(vec![
        OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST,
    ])) {
        prop_assume!(g.declares_media_type && other != g.media_type);
        let body = serde_json::to_vec(&g.doc).unwrap();
        prop_assert!(parse_manifest(&body, Some(other)).is_err());
    }

    #[test]
    fn truncated_manifests_are_refused(g in any_manifest(), cut in any::<prop::sample::Index>()) {
        let body = serde_json::to_vec(&g.doc).unwrap();
        let len = cut.index(body.len()); // 0..len: always a strict prefix
        let ct = Some(g.media_type);
        prop_assert!(parse_manifest(&body[..len], ct).is_err(), "{:?}", String::from_utf8_lossy(&body[..len]));
        prop_assert!(parse_manifest(&body[..len], None).is_err());
    }

    #[test]
    fn corrupted_manifests_are_refused(g in any_manifest(), how in 0u8..8, pick in any::<usize>(), with_header in any::<bool>()) {
        let Some(doc) = corrupt(&g, how, pick) else { return Ok(()) };
        let body = serde_json::to_vec(&doc).unwrap();
        // The header either names the generated type or is absent; a header naming the
        // unknown media type of case 7 is refused as unsupported too.
        let ct = if with_header { Some(g.media_type) } else { None };
        let result = parse_manifest(&body, ct);
        prop_assert!(result.is_err(), "corruption {} accepted: {} -> {:?}", how, doc, result);
    }
}

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        Just(json!(2)),
        "[a-z:0-9./+-]{0,12}".prop_map(Value::String),
        valid_digest().prop_map(Value::String),
        prop::sample::select(vec![OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
            .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "schemaVersion",
                    "mediaType",
                    "config",
                    "layers",
                    "manifests",
                    "digest",
                    "subject",
                    "urls",
                    "annotations",
                    "artifactType",
                    "size",
                ])
                .prop_map(str::to_string),
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
