//! Property test: arbitrary methods, paths, headers and bodies never panic the router
//! and never get a 500.

mod common;

use proptest::prelude::*;

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("v2".to_string()),
        Just("team".to_string()),
        Just("web".to_string()),
        Just("blobs".to_string()),
        Just("uploads".to_string()),
        Just("manifests".to_string()),
        Just("tags".to_string()),
        Just("list".to_string()),
        Just("referrers".to_string()),
        Just("_catalog".to_string()),
        Just("..".to_string()),
        Just(String::new()),
        Just(common::sha256(b"a")),
        Just("sha512:00".to_string()),
        Just("00000000-0000-0000-0000-000000000000".to_string()),
        "[a-zA-Z0-9._%:-]{0,12}",
    ]
}

fn method() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS",
    ])
}

fn header() -> impl Strategy<Value = (&'static str, String)> {
    (
        prop::sample::select(vec![
            "content-range",
            "range",
            "content-type",
            "authorization",
            "content-length",
        ]),
        "[ -~]{0,24}",
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn never_panics_or_500s(
        method in method(),
        segs in prop::collection::vec(segment(), 0..7),
        query in "[a-z=&:0-9%]{0,24}",
        headers in prop::collection::vec(header(), 0..3),
        body in prop::collection::vec(any::<u8>(), 0..64),
        json_body in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let reg = common::registry();
            // Seed one repository so that paths can hit existing records.
            reg.push_image("team/web", "1", "seed").await;
            let path = format!("/{}?{}", segs.join("/"), query);
            let Ok(uri) = path.parse::<http::Uri>() else { return };
            let body = if json_body {
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"digest":"sha256:x"}]}"#.to_vec()
            } else {
                body
            };
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .filter(|(k, v)| http::HeaderValue::from_str(v).is_ok() && *k != "content-length")
                .map(|(k, v)| (*k, v.as_str()))
                .collect();
            let r = reg.send(method, &uri.to_string(), &headers, body).await;
            assert_ne!(r.status, http::StatusCode::INTERNAL_SERVER_ERROR, "{method} {uri}: {}", String::from_utf8_lossy(&r.body));
        });
    }
}
