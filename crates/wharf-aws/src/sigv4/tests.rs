use super::*;
use chrono::TimeZone;
use proptest::prelude::*;

const SUITE_KEY: &str = "AKIDEXAMPLE";
const SUITE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SUITE_DATE: &str = "20150830T123600Z";
const SUITE_SCOPE: &str = "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";

fn suite_now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2015, 8, 30, 12, 36, 0).unwrap()
}

fn suite_store(session_token: Option<&str>) -> StaticCredentials {
    StaticCredentials::new().with(
        SUITE_KEY,
        Credential {
            secret_access_key: SUITE_SECRET.into(),
            account_id: "123456789012".into(),
            session_token: session_token.map(str::to_string),
        },
    )
}

fn header_map(headers: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

/// Verifies one vector of the AWS SigV4 test suite (header form).
fn verify_vector(
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
    authorization: &str,
    session_token: Option<&str>,
) -> Result<VerifiedCaller, SigV4Error> {
    let mut all: Vec<(&str, &str)> = headers.to_vec();
    all.push(("X-Amz-Date", SUITE_DATE));
    all.push(("Authorization", authorization));
    if let Some(t) = session_token {
        all.push(("X-Amz-Security-Token", t));
    }
    let map = header_map(&all);
    let req = SigV4Request {
        method,
        path,
        query,
        headers: &map,
        body: body.as_bytes(),
    };
    verify(&req, &suite_store(session_token), suite_now())
}

fn authz(signed_headers: &str, signature: &str) -> String {
    format!("{ALGORITHM} {SUITE_SCOPE}, SignedHeaders={signed_headers}, Signature={signature}")
}

const HOST: (&str, &str) = ("Host", "example.amazonaws.com");

#[test]
fn suite_get_vanilla() {
    let a = authz(
        "host;x-amz-date",
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    );
    let caller = verify_vector("GET", "/", None, &[HOST], "", &a, None).unwrap();
    assert_eq!(
        caller,
        VerifiedCaller {
            access_key_id: SUITE_KEY.into(),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            service: "service".into(),
        }
    );
}

#[test]
fn suite_post_vanilla() {
    let a = authz(
        "host;x-amz-date",
        "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
    );
    verify_vector("POST", "/", None, &[HOST], "", &a, None).unwrap();
}

#[test]
fn suite_get_vanilla_query_order_key_case() {
    let a = authz(
        "host;x-amz-date",
        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    );
    verify_vector(
        "GET",
        "/",
        Some("Param2=value2&Param1=value1"),
        &[HOST],
        "",
        &a,
        None,
    )
    .unwrap();
}

#[test]
fn suite_post_x_www_form_urlencoded() {
    let a = authz(
        "content-type;host;x-amz-date",
        "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
    );
    let headers = [("Content-Type", "application/x-www-form-urlencoded"), HOST];
    verify_vector("POST", "/", None, &headers, "Param1=value1", &a, None).unwrap();
    // The body is covered: changing it breaks the signature.
    assert_eq!(
        verify_vector("POST", "/", None, &headers, "Param1=value2", &a, None),
        Err(SigV4Error::SignatureMismatch)
    );
}

#[test]
fn suite_get_header_value_trim() {
    let a = authz(
        "host;my-header1;my-header2;x-amz-date",
        "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
    );
    let headers = [
        HOST,
        ("My-Header1", " value1"),
        ("My-Header2", " \"a   b   c\""),
    ];
    verify_vector("GET", "/", None, &headers, "", &a, None).unwrap();
}

#[test]
fn suite_get_header_key_duplicate() {
    let a = authz(
        "host;my-header1;x-amz-date",
        "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
    );
    let headers = [
        HOST,
        ("My-Header1", "value2"),
        ("My-Header1", "value2"),
        ("My-Header1", "value1"),
    ];
    verify_vector("GET", "/", None, &headers, "", &a, None).unwrap();
}

#[test]
fn suite_get_unreserved() {
    let a = authz(
        "host;x-amz-date",
        "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
    );
    verify_vector(
        "GET",
        "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        None,
        &[HOST],
        "",
        &a,
        None,
    )
    .unwrap();
}

/// A non-S3 service encodes the already-encoded wire path again; the expected
/// signature was cross-checked against aws-sdk-go-v2 by its publisher.
#[test]
fn non_s3_path_is_encoded_twice() {
    let a = authz(
        "host;x-amz-date",
        "c61fac14909992917274d02f2be6b4fbeb731d6b6eaff9c506aa8c0819d0527f",
    );
    verify_vector("GET", "/my%20object", None, &[HOST], "", &a, None).unwrap();
    assert_eq!(canonical_uri("/my%20object"), "/my%2520object");
}

/// The session-token case, as signed by aws-sdk-go-v2 (third-party vector).
#[test]
fn session_token_vector() {
    let token = "AQoDYXdzEPT//////////wEXAMPLEtEXAMPLE";
    let a = authz(
        "host;x-amz-date;x-amz-security-token",
        "edaa8d606468f4d6bcd2ed19b063100237fc7c92517ce3ef0bfb21177c74ac5d",
    );
    verify_vector("GET", "/", None, &[HOST], "", &a, Some(token)).unwrap();
}

#[test]
fn suite_presigned_get_vanilla() {
    let query = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fservice%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature=e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d";
    let map = header_map(&[HOST]);
    let req = SigV4Request {
        method: "GET",
        path: "/",
        query: Some(query),
        headers: &map,
        body: b"",
    };
    let store = suite_store(None);
    verify(&req, &store, suite_now()).unwrap();
    // Still valid near the end of its hour, expired after it.
    verify(&req, &store, suite_now() + TimeDelta::minutes(59)).unwrap();
    assert!(matches!(
        verify(&req, &store, suite_now() + TimeDelta::minutes(61)),
        Err(SigV4Error::PresignedExpired { .. })
    ));
}

#[test]
fn signer_reproduces_suite_presigned_vector() {
    let creds = SigningCredentials {
        access_key_id: SUITE_KEY.into(),
        secret_access_key: SUITE_SECRET.into(),
        session_token: None,
    };
    let q = presign_query(
        &creds,
        SigningScope {
            region: "us-east-1",
            service: "service",
        },
        PresignTarget {
            method: "GET",
            path: "/",
            query: "",
            host: "example.amazonaws.com",
        },
        3600,
        suite_now(),
    )
    .unwrap();
    assert!(q.ends_with(
        "X-Amz-Signature=e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d"
    ));
}

#[test]
fn canonical_query_sorts_and_encodes() {
    let q = parse_raw_query("b=2&a=1&a=0&q=hello+world&flag&p=a/b:c");
    assert_eq!(
        canonical_query(&q, false),
        "a=0&a=1&b=2&flag=&p=a%2Fb%3Ac&q=hello%2Bworld"
    );
}

#[test]
fn path_normalisation_follows_botocore() {
    assert_eq!(normalize_path(""), "/");
    assert_eq!(normalize_path("/"), "/");
    assert_eq!(normalize_path("//a//b/./c/../"), "/a/b/");
    assert_eq!(normalize_path("/.."), "/");
}

#[test]
fn header_folding_trims_and_collapses_ascii_whitespace_only() {
    let mut out = Vec::new();
    fold_header_value(b" \tone  two\t\tthree \t", &mut out);
    assert_eq!(out, b"one two three");
    out.clear();
    fold_header_value(b"   ", &mut out);
    assert!(out.is_empty());
}

// --- error paths -------------------------------------------------------------------

fn fresh_request(headers: &[(&str, &str)]) -> HeaderMap {
    header_map(headers)
}

fn verify_headers(map: &HeaderMap, now: DateTime<Utc>) -> Result<VerifiedCaller, SigV4Error> {
    verify(
        &SigV4Request {
            method: "POST",
            path: "/",
            query: None,
            headers: map,
            body: b"{}",
        },
        &test_store(),
        now,
    )
}

fn test_store() -> StaticCredentials {
    StaticCredentials::new()
        .with(
            "test",
            Credential {
                secret_access_key: "test".into(),
                account_id: "000000000000".into(),
                session_token: None,
            },
        )
        .with(
            "ASIATEMP",
            Credential {
                secret_access_key: "tempsecret".into(),
                account_id: "111111111111".into(),
                session_token: Some("the-token".into()),
            },
        )
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9).unwrap()
}

fn signed(key: &str, secret: &str, token: Option<&str>, at: DateTime<Utc>) -> HeaderMap {
    let mut map = fresh_request(&[
        ("host", "localhost:4566"),
        ("content-type", "application/x-amz-json-1.1"),
    ]);
    let creds = SigningCredentials {
        access_key_id: key.into(),
        secret_access_key: secret.into(),
        session_token: token.map(str::to_string),
    };
    let h = sign_request(
        &creds,
        SigningScope {
            region: "eu-west-1",
            service: "ecs",
        },
        "POST",
        "/",
        &map,
        b"{}",
        at,
    )
    .unwrap();
    h.apply(&mut map).unwrap();
    map
}

#[test]
fn round_trip_with_test_key() {
    let map = signed("test", "test", None, now());
    let caller = verify_headers(&map, now()).unwrap();
    assert_eq!(caller.region, "eu-west-1");
    assert_eq!(caller.service, "ecs");
    assert_eq!(caller.account_id, "000000000000");
}

#[test]
fn no_auth_is_missing_token_403() {
    let map = fresh_request(&[("host", "x")]);
    let err = verify_headers(&map, now()).unwrap_err();
    assert_eq!(err, SigV4Error::MissingAuthentication);
    let aws: AwsError = err.into();
    assert_eq!(aws.code, "MissingAuthenticationTokenException");
    assert_eq!(aws.status, 403);
    assert_eq!(aws.message, "Missing Authentication Token");
}

#[test]
fn malformed_authorization_is_incomplete() {
    for value in [
        "Bearer abc",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=test/20240506/eu-west-1/ecs/aws4_request",
        "AWS4-HMAC-SHA256 Credential=test/eu-west-1/ecs/aws4_request, SignedHeaders=host, Signature=00",
    ] {
        let map = fresh_request(&[("host", "x"), ("x-amz-date", "20240506T070809Z"), ("authorization", value)]);
        let err = verify_headers(&map, now()).unwrap_err();
        assert_eq!(err.code(), "IncompleteSignatureException", "{value}: {err}");
        assert_eq!(err.status(), 400);
    }
}

#[test]
fn missing_date_is_incomplete() {
    let mut map = signed("test", "test", None, now());
    map.remove("x-amz-date");
    let err = verify_headers(&map, now()).unwrap_err();
    assert_eq!(err.code(), "IncompleteSignatureException");
    assert!(err.to_string().contains("'X-Amz-Date'"), "{err}");
}

#[test]
fn unknown_key_is_unrecognized_client() {
    let map = signed("FOOBARKEY", "whatever", None, now());
    let err: AwsError = verify_headers(&map, now()).unwrap_err().into();
    assert_eq!(err.code, "UnrecognizedClientException");
    assert_eq!(err.status, 400);
    assert_eq!(
        err.message,
        "The security token included in the request is invalid."
    );
}

#[test]
fn wrong_secret_is_invalid_signature() {
    let map = signed("test", "not-the-secret", None, now());
    let err: AwsError = verify_headers(&map, now()).unwrap_err().into();
    assert_eq!(err.code, "InvalidSignatureException");
    assert_eq!(err.message, SIGNATURE_MISMATCH_MESSAGE);
}

#[test]
fn tampered_header_is_invalid_signature() {
    let mut map = signed("test", "test", None, now());
    map.insert("content-type", http::HeaderValue::from_static("text/plain"));
    assert_eq!(
        verify_headers(&map, now()),
        Err(SigV4Error::SignatureMismatch)
    );
}

#[test]
fn skew_messages_match_aws() {
    let map = signed("test", "test", None, now());
    let err = verify_headers(&map, now() + TimeDelta::minutes(16)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Signature expired: 20240506T070809Z is now earlier than 20240506T070909Z (20240506T072409Z - 15 min.)"
    );
    assert_eq!(err.code(), "InvalidSignatureException");
    let err = verify_headers(&map, now() - TimeDelta::minutes(16)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Signature not yet current: 20240506T070809Z is still later than 20240506T070709Z (20240506T065209Z + 15 min.)"
    );
    // Inside the window either way is fine.
    verify_headers(&map, now() + TimeDelta::minutes(14)).unwrap();
    verify_headers(&map, now() - TimeDelta::minutes(14)).unwrap();
}

#[test]
fn temporary_credentials_need_their_token() {
    let map = signed("ASIATEMP", "tempsecret", Some("the-token"), now());
    assert_eq!(
        verify_headers(&map, now()).unwrap().account_id,
        "111111111111"
    );
    let map = signed("ASIATEMP", "tempsecret", None, now());
    assert_eq!(
        verify_headers(&map, now()),
        Err(SigV4Error::UnrecognizedClient)
    );
    let map = signed("ASIATEMP", "tempsecret", Some("other-token"), now());
    assert_eq!(
        verify_headers(&map, now()),
        Err(SigV4Error::UnrecognizedClient)
    );
    // A token sent with permanent credentials is refused too.
    let map = signed("test", "test", Some("stray"), now());
    assert_eq!(
        verify_headers(&map, now()),
        Err(SigV4Error::UnrecognizedClient)
    );
}

#[test]
fn content_sha256_must_match_body() {
    let mut map = signed("test", "test", None, now());
    map.insert(
        "x-amz-content-sha256",
        http::HeaderValue::from_static(EMPTY_PAYLOAD_SHA256),
    );
    assert_eq!(
        verify_headers(&map, now()),
        Err(SigV4Error::ContentSha256Mismatch)
    );
}

#[test]
fn scope_date_must_match_amz_date() {
    let mut map = signed("test", "test", None, now());
    map.insert(
        "x-amz-date",
        http::HeaderValue::from_static("20240507T070809Z"),
    );
    let err = verify_headers(&map, now() + TimeDelta::days(1) - TimeDelta::minutes(1)).unwrap_err();
    assert!(matches!(err, SigV4Error::InvalidScope(_)), "{err}");
}

#[test]
fn credential_debug_hides_secret() {
    let c = Credential {
        secret_access_key: "s3cr3t".into(),
        account_id: "1".into(),
        session_token: Some("tok".into()),
    };
    let s = format!("{c:?}");
    assert!(!s.contains("s3cr3t") && !s.contains("tok\""), "{s}");
}

#[test]
fn sign_http_request_fills_host_from_uri() {
    let mut req = http::Request::builder()
        .method("POST")
        .uri("http://localhost:8080/?Action=Foo")
        .body(())
        .unwrap();
    let creds = SigningCredentials {
        access_key_id: "test".into(),
        secret_access_key: "test".into(),
        session_token: None,
    };
    let scope = SigningScope {
        region: "us-east-1",
        service: "ecs",
    };
    sign_http_request(&mut req, b"", &creds, scope, now()).unwrap();
    assert_eq!(req.headers()["host"], "localhost:8080");
    let r = SigV4Request {
        method: "POST",
        path: "/",
        query: Some("Action=Foo"),
        headers: req.headers(),
        body: b"",
    };
    verify(&r, &test_store(), now()).unwrap();
}

proptest! {
    #[test]
    fn sign_verify_round_trip(
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE"]),
        path in "(/[a-zA-Z0-9%._~ -]{0,8}){0,4}",
        query in "([a-zA-Z0-9.%+]{1,6}=[a-zA-Z0-9.%+ /]{0,6}&?){0,4}",
        body in prop::collection::vec(any::<u8>(), 0..256),
        extra in "[ -~]{0,30}",
        region in "[a-z]{2}-[a-z]{4,9}-[1-9]",
        service in "[a-z]{2,10}",
        key in "[A-Z0-9]{1,20}",
        secret in "[ -~]{1,40}",
        offset_secs in -899i64..899,
    ) {
        let path = if path.is_empty() { "/".to_string() } else { path.replace(' ', "%20") };
        let query = query.replace(' ', "%20");
        let path_and_query = if query.is_empty() { path.clone() } else { format!("{path}?{query}") };
        let mut map = header_map(&[("host", "wharf.local:4566"), ("x-amz-target", "Svc.Op")]);
        if let Ok(v) = http::HeaderValue::from_str(&extra) {
            map.insert("x-custom", v);
        }
        let creds = SigningCredentials { access_key_id: key.clone(), secret_access_key: secret.clone(), session_token: None };
        let scope = SigningScope { region: &region, service: &service };
        let at = now();
        let h = sign_request(&creds, scope, method, &path_and_query, &map, &body, at).unwrap();
        h.apply(&mut map).unwrap();
        let store = StaticCredentials::new().with(key.clone(), Credential {
            secret_access_key: secret, account_id: "1".into(), session_token: None });
        let req = SigV4Request {
            method, path: &path, query: if query.is_empty() { None } else { Some(&query) },
            headers: &map, body: &body,
        };
        let caller = verify(&req, &store, at + TimeDelta::seconds(offset_secs)).unwrap();
        prop_assert_eq!(caller.access_key_id, key);
        prop_assert_eq!(caller.region, region);
        prop_assert_eq!(caller.service, service);
        // Any change to the body is caught.
        let mut other = body.clone();
        other.push(b'x');
        let req2 = SigV4Request { body: &other, ..req };
        prop_assert!(verify(&req2, &store, at).is_err());
    }

    #[test]
    fn verify_never_panics(
        auth in "\\PC{0,200}",
        date in "[0-9TZ]{0,20}",
        path in "\\PC{0,40}",
        query in "\\PC{0,80}",
        body in prop::collection::vec(any::<u8>(), 0..64),
        sha in "\\PC{0,70}",
    ) {
        let mut map = HeaderMap::new();
        map.insert("host", http::HeaderValue::from_static("h"));
        for (name, value) in [("authorization", &auth), ("x-amz-date", &date), ("x-amz-content-sha256", &sha)] {
            if let Ok(v) = http::HeaderValue::from_str(value) {
                map.insert(name, v);
            }
        }
        let req = SigV4Request { method: "POST", path: &path, query: Some(&query), headers: &map, body: &body };
        let _ = verify(&req, &test_store(), now());
    }

    #[test]
    fn structured_auth_header_never_panics(
        cred in "[a-zA-Z0-9/_-]{0,60}",
        signed in "[a-z;-]{0,30}",
        sig in "[0-9a-fA-FxZ]{0,70}",
    ) {
        let value = format!("AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders={signed}, Signature={sig}");
        let map = fresh_request(&[("host", "h"), ("x-amz-date", "20240506T070809Z"), ("authorization", &value)]);
        let _ = verify_headers(&map, now());
    }
}

#[test]
fn query_components_keep_only_unreserved_characters() {
    assert_eq!(
        encode_query_component("arn:aws:ecs:us-east-1:0:cluster/a b"),
        "arn%3Aaws%3Aecs%3Aus-east-1%3A0%3Acluster%2Fa%20b"
    );
    assert_eq!(encode_query_component("A-z_0.9~"), "A-z_0.9~");
}
