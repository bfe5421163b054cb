//! AWS Signature Version 4: verification of incoming requests and signing of Wharf's
//! own outgoing ones.
//!
//! Verification rebuilds the canonical request from the client's own `SignedHeaders`
//! with the rules AWS applies to every service except S3 (the path is normalised and
//! encoded a second time), derives the signing key from the secret the
//! [`CredentialStore`] holds, and compares signatures in constant time. Both forms are
//! accepted: the `Authorization` header and presigned query strings (`X-Amz-Algorithm`
//! and friends in the URL). Time is a parameter so tests can pin it.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

use crate::error::AwsError;

type HmacSha256 = Hmac<Sha256>;

/// The only signing algorithm SigV4 defines.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// How far a request's `X-Amz-Date` may be from the server's clock, as AWS allows.
pub const MAX_CLOCK_SKEW: TimeDelta = TimeDelta::minutes(15);

/// The longest a presigned URL may stay valid (`X-Amz-Expires`), as AWS allows.
pub const MAX_PRESIGNED_EXPIRES_SECS: i64 = 604_800;

/// SHA-256 of the empty string, the payload hash of every body-less request.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

const AMZ_DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// AWS's message for a signature that does not match, word for word: SDK users search
/// for it.
pub const SIGNATURE_MISMATCH_MESSAGE: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";

/// Everything except the RFC 3986 unreserved characters is percent-encoded in a
/// canonical query string.
const STRICT_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The canonical URI keeps its `/` separators.
const PATH_ENCODE: &AsciiSet = &STRICT_ENCODE.remove(b'/');

/// The secret behind an access key id.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The secret the client signs with.
    pub secret_access_key: String,
    /// The account the key belongs to.
    pub account_id: String,
    /// For temporary credentials, the token the request must carry in
    /// `X-Amz-Security-Token`.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credential {
    // The secret must never reach a log line through a `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("secret_access_key", &"<redacted>")
            .field("account_id", &self.account_id)
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Where verification finds the secret for an access key id.
pub trait CredentialStore: Send + Sync {
    /// The credential for `access_key_id`, or `None` if the key is unknown.
    fn lookup(&self, access_key_id: &str) -> Option<Credential>;
}

/// A fixed set of credentials, for configuration files and tests.
#[derive(Debug, Clone, Default)]
pub struct StaticCredentials {
    keys: HashMap<String, Credential>,
}

impl StaticCredentials {
    /// An empty store: every key is unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) one key.
    pub fn with(mut self, access_key_id: impl Into<String>, credential: Credential) -> Self {
        self.insert(access_key_id, credential);
        self
    }

    /// Adds (or replaces) one key.
    pub fn insert(&mut self, access_key_id: impl Into<String>, credential: Credential) {
        self.keys.insert(access_key_id.into(), credential);
    }
}

impl CredentialStore for StaticCredentials {
    fn lookup(&self, access_key_id: &str) -> Option<Credential> {
        if access_key_id.is_empty() {
            return None;
        }
        self.keys.get(access_key_id).cloned()
    }
}

/// Who signed a request, read from its credential scope after the signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCaller {
    /// The access key id that signed.
    pub access_key_id: String,
    /// The account the key belongs to.
    pub account_id: String,
    /// The region of the credential scope.
    pub region: String,
    /// The service of the credential scope (the signing name, e.g. `ecs`).
    pub service: String,
}

/// The parts of an HTTP request that SigV4 covers, as they arrived on the wire.
#[derive(Debug, Clone, Copy)]
pub struct SigV4Request<'a> {
    /// The HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// The path exactly as sent (still percent-encoded), e.g. `/`.
    pub path: &'a str,
    /// The raw query string without the `?`, if any.
    pub query: Option<&'a str>,
    /// The request headers; `host` must be among them (HTTP/2 callers copy
    /// `:authority` into it).
    pub headers: &'a HeaderMap,
    /// The whole body.
    pub body: &'a [u8],
}

/// Why a request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// Neither an `Authorization` header nor presigned query parameters.
    #[error("Missing Authentication Token")]
    MissingAuthentication,
    /// The authorization data is there but malformed or incomplete.
    #[error("{0}")]
    Incomplete(String),
    /// The access key id is unknown, or the session token is missing or wrong.
    #[error("The security token included in the request is invalid.")]
    UnrecognizedClient,
    /// The signature does not match the one computed here.
    #[error("{SIGNATURE_MISMATCH_MESSAGE}")]
    SignatureMismatch,
    /// The request was signed more than 15 minutes ago.
    #[error("Signature expired: {signed} is now earlier than {earliest} ({now} - 15 min.)")]
    Expired {
        /// The request's `X-Amz-Date`.
        signed: String,
        /// The earliest date still accepted.
        earliest: String,
        /// The server's clock.
        now: String,
    },
    /// The request is dated more than 15 minutes in the future.
    #[error("Signature not yet current: {signed} is still later than {latest} ({now} + 15 min.)")]
    NotYetCurrent {
        /// The request's `X-Amz-Date`.
        signed: String,
        /// The latest date still accepted.
        latest: String,
        /// The server's clock.
        now: String,
    },
    /// A presigned URL used after its `X-Amz-Expires`.
    #[error("Request has expired: signed at {signed} for {expires_secs} seconds, now {now}.")]
    PresignedExpired {
        /// The URL's `X-Amz-Date`.
        signed: String,
        /// The URL's `X-Amz-Expires`.
        expires_secs: i64,
        /// The server's clock.
        now: String,
    },
    /// The credential scope or signed headers break a rule (wrong date, `host`
    /// unsigned, bad terminator).
    #[error("{0}")]
    InvalidScope(String),
    /// `x-amz-content-sha256` names a hash the body does not have.
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    ContentSha256Mismatch,
}

impl SigV4Error {
    /// The error code SDKs map to an exception class.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingAuthentication => "MissingAuthenticationTokenException",
            Self::Incomplete(_) => "IncompleteSignatureException",
            Self::UnrecognizedClient => "UnrecognizedClientException",
            Self::SignatureMismatch
            | Self::Expired { .. }
            | Self::NotYetCurrent { .. }
            | Self::PresignedExpired { .. }
            | Self::InvalidScope(_) => "InvalidSignatureException",
            Self::ContentSha256Mismatch => "XAmzContentSHA256Mismatch",
        }
    }

    /// The HTTP status AWS answers with: 403 for a missing token, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            Self::MissingAuthentication => 403,
            _ => 400,
        }
    }
}

impl From<SigV4Error> for AwsError {
    fn from(err: SigV4Error) -> Self {
        AwsError::client_with_status(err.code(), err.to_string(), err.status())
    }
}

/// The authorization data of a request, from either the header or the query string.
struct AuthParts {
    access_key_id: String,
    scope_date: String,
    region: String,
    service: String,
    /// Lower-cased header names in the order the client listed them.
    signed_headers: Vec<String>,
    signature: Vec<u8>,
    amz_date: String,
    security_token: Option<String>,
    /// `Some` for presigned requests.
    presigned_expires: Option<i64>,
}

/// Verifies a request's SigV4 signature at time `now`.
pub fn verify(
    request: &SigV4Request<'_>,
    credentials: &dyn CredentialStore,
    now: DateTime<Utc>,
) -> Result<VerifiedCaller, SigV4Error> {
    let query = parse_raw_query(request.query.unwrap_or(""));
    let auth = match request.headers.get(http::header::AUTHORIZATION) {
        Some(value) => parse_authorization_header(value.as_bytes(), request.headers)?,
        None if query.iter().any(|p| p.name == b"X-Amz-Algorithm") => parse_presigned(&query)?,
        None => return Err(SigV4Error::MissingAuthentication),
    };

    let signed_at = parse_amz_date(&auth.amz_date)?;
    if !auth.amz_date.starts_with(&auth.scope_date) {
        return Err(SigV4Error::InvalidScope(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{}'.",
            auth.scope_date,
            auth.amz_date.get(..8).unwrap_or(&auth.amz_date),
            auth.amz_date
        )));
    }
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(SigV4Error::InvalidScope(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".into(),
        ));
    }

    let credential = credentials
        .lookup(&auth.access_key_id)
        .ok_or(SigV4Error::UnrecognizedClient)?;
    // Temporary credentials are only valid with their token, and a token sent with
    // permanent credentials names credentials that do not exist.
    match (&credential.session_token, &auth.security_token) {
        (None, None) => {}
        (Some(expected), Some(sent)) if constant_time_eq(expected.as_bytes(), sent.as_bytes()) => {}
        _ => return Err(SigV4Error::UnrecognizedClient),
    }

    check_time(signed_at, auth.presigned_expires, now)?;

    let payload_hash = payload_hash(request)?;
    let canonical = canonical_request(
        request.method,
        request.path,
        &query,
        auth.presigned_expires.is_some(),
        request.headers,
        &auth.signed_headers,
        &payload_hash,
    );
    let string_to_sign = string_to_sign(
        &auth.amz_date,
        &auth.scope_date,
        &auth.region,
        &auth.service,
        &canonical,
    );
    let key = signing_key(
        &credential.secret_access_key,
        &auth.scope_date,
        &auth.region,
        &auth.service,
    );
    let mut mac = hmac_for(&key);
    mac.update(string_to_sign.as_bytes());
    // `verify_slice` compares in constant time, so the comparison leaks nothing about
    // how much of a forged signature was right.
    mac.verify_slice(&auth.signature)
        .map_err(|_| SigV4Error::SignatureMismatch)?;

    Ok(VerifiedCaller {
        access_key_id: auth.access_key_id,
        account_id: credential.account_id,
        region: auth.region,
        service: auth.service,
    })
}

fn check_time(
    signed_at: DateTime<Utc>,
    presigned_expires: Option<i64>,
    now: DateTime<Utc>,
) -> Result<(), SigV4Error> {
    let fmt = |t: DateTime<Utc>| t.format(AMZ_DATE_FORMAT).to_string();
    let latest = now + MAX_CLOCK_SKEW;
    if signed_at > latest {
        return Err(SigV4Error::NotYetCurrent {
            signed: fmt(signed_at),
            latest: fmt(latest),
            now: fmt(now),
        });
    }
    match presigned_expires {
        // A presigned URL is valid for its own lifetime, not for the skew window.
        Some(expires_secs) => {
            if signed_at + TimeDelta::seconds(expires_secs) < now {
                return Err(SigV4Error::PresignedExpired {
                    signed: fmt(signed_at),
                    expires_secs,
                    now: fmt(now),
                });
            }
        }
        None => {
            let earliest = now - MAX_CLOCK_SKEW;
            if signed_at < earliest {
                return Err(SigV4Error::Expired {
                    signed: fmt(signed_at),
                    earliest: fmt(earliest),
                    now: fmt(now),
                });
            }
        }
    }
    Ok(())
}

fn payload_hash(request: &SigV4Request<'_>) -> Result<String, SigV4Error> {
    let computed = || hex::encode(Sha256::digest(request.body));
    let Some(declared) = request.headers.get("x-amz-content-sha256") else {
        return Ok(computed());
    };
    let declared = String::from_utf8_lossy(declared.as_bytes()).into_owned();
    // A declared hash must be the body's; the non-hash markers (`UNSIGNED-PAYLOAD`)
    // are signed as they are, which is what the client asked for.
    let is_hash = declared.len() == 64 && declared.bytes().all(|b| b.is_ascii_hexdigit());
    if is_hash && !declared.eq_ignore_ascii_case(&computed()) {
        return Err(SigV4Error::ContentSha256Mismatch);
    }
    Ok(declared)
}

fn incomplete_header(missing: &[&str], header: &str) -> SigV4Error {
    let mut msg = String::new();
    for name in missing {
        if *name == "X-Amz-Date" {
            msg.push_str("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header. ");
        } else {
            let _ = write!(msg, "Authorization header requires '{name}' parameter. ");
        }
    }
    let _ = write!(msg, "Authorization={header}");
    SigV4Error::Incomplete(msg)
}

fn parse_authorization_header(value: &[u8], headers: &HeaderMap) -> Result<AuthParts, SigV4Error> {
    let header = String::from_utf8_lossy(value);
    let rest = match header.strip_prefix(ALGORITHM) {
        Some(rest) if rest.starts_with([' ', '\t']) => rest,
        _ => {
            return Err(SigV4Error::Incomplete(format!(
                "Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization={header}"
            )))
        }
    };
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        if let Some((k, v)) = part.trim().split_once('=') {
            match k.trim() {
                "Credential" => credential = Some(v.trim().to_string()),
                "SignedHeaders" => signed_headers = Some(v.trim().to_string()),
                "Signature" => signature = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    let amz_date = headers
        .get("x-amz-date")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_string());
    let mut missing = Vec::new();
    if credential.as_deref().is_none_or(str::is_empty) {
        missing.push("Credential");
    }
    if signature.is_none() {
        missing.push("Signature");
    }
    if signed_headers.as_deref().is_none_or(str::is_empty) {
        missing.push("SignedHeaders");
    }
    if amz_date.is_none() {
        missing.push("X-Amz-Date");
    }
    let (Some(credential), Some(signed_headers), Some(signature), Some(amz_date), true) = (
        credential,
        signed_headers,
        signature,
        amz_date,
        missing.is_empty(),
    ) else {
        return Err(incomplete_header(&missing, &header));
    };
    let scope = parse_credential(&credential)?;
    let security_token = headers
        .get("x-amz-security-token")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    Ok(AuthParts {
        access_key_id: scope.0,
        scope_date: scope.1,
        region: scope.2,
        service: scope.3,
        signed_headers: parse_signed_headers(&signed_headers),
        signature: hex::decode(&signature).map_err(|_| SigV4Error::SignatureMismatch)?,
        amz_date,
        security_token,
        presigned_expires: None,
    })
}

fn parse_presigned(query: &[QueryPair]) -> Result<AuthParts, SigV4Error> {
    let get = |name: &str| {
        query
            .iter()
            .find(|p| p.name == name.as_bytes())
            .map(|p| String::from_utf8_lossy(&p.value).into_owned())
    };
    let missing = || {
        SigV4Error::Incomplete(
            "AWS query-string parameters must include 'X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Signature', 'X-Amz-Date', 'X-Amz-SignedHeaders'. Re-examine the query-string parameters.".into(),
        )
    };
    let algorithm = get("X-Amz-Algorithm").ok_or_else(missing)?;
    if algorithm != ALGORITHM {
        return Err(SigV4Error::Incomplete(format!(
            "X-Amz-Algorithm only supports \"{ALGORITHM}\", not \"{algorithm}\"."
        )));
    }
    let credential = get("X-Amz-Credential").ok_or_else(missing)?;
    let signature = get("X-Amz-Signature").ok_or_else(missing)?;
    let amz_date = get("X-Amz-Date").ok_or_else(missing)?;
    let signed_headers = get("X-Amz-SignedHeaders").ok_or_else(missing)?;
    let expires = match get("X-Amz-Expires") {
        None => MAX_CLOCK_SKEW.num_seconds(),
        Some(raw) => match raw.parse::<i64>() {
            Ok(n) if (0..=MAX_PRESIGNED_EXPIRES_SECS).contains(&n) => n,
            _ => {
                return Err(SigV4Error::Incomplete(format!(
                    "X-Amz-Expires must be a non-negative integer no greater than {MAX_PRESIGNED_EXPIRES_SECS} (a week), not '{raw}'."
                )))
            }
        },
    };
    let scope = parse_credential(&credential)?;
    Ok(AuthParts {
        access_key_id: scope.0,
        scope_date: scope.1,
        region: scope.2,
        service: scope.3,
        signed_headers: parse_signed_headers(&signed_headers),
        signature: hex::decode(&signature).map_err(|_| SigV4Error::SignatureMismatch)?,
        amz_date,
        security_token: get("X-Amz-Security-Token"),
        presigned_expires: Some(expires),
    })
}

/// Splits `AKID/YYYYMMDD/region/service/aws4_request` into its four variable parts.
fn parse_credential(credential: &str) -> Result<(String, String, String, String), SigV4Error> {
    let parts: Vec<&str> = credential.split('/').collect();
    let [key, date, region, service, terminator] = parts.as_slice() else {
        return Err(SigV4Error::Incomplete(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{credential}'"
        )));
    };
    if [key, date, region, service].iter().any(|p| p.is_empty()) {
        return Err(SigV4Error::Incomplete(format!(
            "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{credential}'"
        )));
    }
    if *terminator != "aws4_request" {
        return Err(SigV4Error::InvalidScope(format!(
            "Credential should be scoped with a valid terminator: 'aws4_request', not '{terminator}'. "
        )));
    }
    Ok((
        key.to_string(),
        date.to_string(),
        region.to_string(),
        service.to_string(),
    ))
}

fn parse_signed_headers(raw: &str) -> Vec<String> {
    raw.split(';')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect()
}

fn parse_amz_date(raw: &str) -> Result<DateTime<Utc>, SigV4Error> {
    // The format is fixed-width; checking the length first keeps chrono from accepting
    // variants such as a single-digit month.
    if raw.len() == 16 {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, AMZ_DATE_FORMAT) {
            return Ok(t.and_utc());
        }
    }
    Err(SigV4Error::Incomplete(format!(
        "Date must be in ISO-8601 'basic format'. Got '{raw}'. See http://en.wikipedia.org/wiki/ISO_8601"
    )))
}

/// One query parameter, percent-decoded (a `+` stays a `+`, as AWS reads it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct QueryPair {
    name: Vec<u8>,
    value: Vec<u8>,
}

fn parse_raw_query(raw: &str) -> Vec<QueryPair> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            QueryPair {
                name: percent_decode(name.as_bytes()).collect(),
                value: percent_decode(value.as_bytes()).collect(),
            }
        })
        .collect()
}

fn encode_strict(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, STRICT_ENCODE).to_string()
}

/// Percent-encodes a query parameter name or value as SigV4's canonical query string
/// does (only RFC 3986's unreserved characters pass), so that a URL a client builds
/// with it signs and verifies as sent.
pub fn encode_query_component(value: &str) -> String {
    encode_strict(value.as_bytes())
}

/// The canonical query string: every parameter encoded strictly, sorted by name then
/// value; a presigned request leaves its own signature out.
fn canonical_query(query: &[QueryPair], presigned: bool) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .filter(|p| !(presigned && p.name == b"X-Amz-Signature"))
        .map(|p| (encode_strict(&p.name), encode_strict(&p.value)))
        .collect();
    pairs.sort();
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// The canonical URI for every service but S3: the wire path with dot segments and
/// repeated slashes removed, then encoded again (so `%20` becomes `%2520`), as botocore
/// and the other SDKs build it.
fn canonical_uri(path: &str) -> String {
    let normalized = normalize_path(path);
    utf8_percent_encode(&normalized, PATH_ENCODE).to_string()
}

fn normalize_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::from("/");
    out.push_str(&segments.join("/"));
    if path.ends_with('/') && !segments.is_empty() {
        out.push('/');
    }
    out
}

/// A header value with its ends trimmed and inner runs of spaces and tabs folded to
/// one space. Only ASCII whitespace counts: other bytes are signed as they are.
fn fold_header_value(value: &[u8], out: &mut Vec<u8>) {
    let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ws(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ws(b))
        .map_or(start, |i| i + 1);
    let mut in_ws = false;
    for b in &value[start..end] {
        if is_ws(b) {
            in_ws = true;
        } else {
            if in_ws {
                out.push(b' ');
                in_ws = false;
            }
            out.push(*b);
        }
    }
}

fn canonical_request(
    method: &str,
    path: &str,
    query: &[QueryPair],
    presigned: bool,
    headers: &HeaderMap,
    signed_headers: &[String],
    payload_hash: &str,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(method.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_uri(path).as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query(query, presigned).as_bytes());
    out.push(b'\n');
    for name in signed_headers {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        // Repeated headers are joined with commas in the order they arrived.
        for (i, value) in headers.get_all(name.as_str()).iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            fold_header_value(value.as_bytes(), &mut out);
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers.join(";").as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    out
}

fn string_to_sign(
    amz_date: &str,
    scope_date: &str,
    region: &str,
    service: &str,
    canonical_request: &[u8],
) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope_date}/{region}/{service}/aws4_request\n{}",
        hex::encode(Sha256::digest(canonical_request))
    )
}

fn hmac_for(key: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail; the fallback keeps the
    // request path free of panics all the same.
    HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = hmac_for(key);
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------------------------
// Signing, for Wharf's own clients.
// ---------------------------------------------------------------------------------

/// The keys a client signs with.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningCredentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token of temporary credentials.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for SigningCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// What a request is signed for.
#[derive(Debug, Clone, Copy)]
pub struct SigningScope<'a> {
    /// The region, e.g. `us-east-1`.
    pub region: &'a str,
    /// The service's signing name, e.g. `ecs`.
    pub service: &'a str,
}

/// Why a request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// SigV4 signs the `host` header, so the request must have one (or an absolute URI).
    #[error("the request has no Host header and no authority in its URI")]
    MissingHost,
    /// A generated header value was not a valid HTTP header value.
    #[error("a signed header value is not valid in HTTP: {0}")]
    InvalidHeaderValue(String),
}

/// The headers a signature adds to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigV4Headers {
    /// `Authorization`.
    pub authorization: String,
    /// `X-Amz-Date`.
    pub x_amz_date: String,
    /// `x-amz-content-sha256`.
    pub x_amz_content_sha256: String,
    /// `X-Amz-Security-Token`, for temporary credentials.
    pub x_amz_security_token: Option<String>,
}

impl SigV4Headers {
    /// Inserts the headers into `headers`, replacing any earlier values.
    pub fn apply(&self, headers: &mut HeaderMap) -> Result<(), SigningError> {
        let value = |s: &str| {
            http::HeaderValue::from_str(s)
                .map_err(|_| SigningError::InvalidHeaderValue(s.to_string()))
        };
        headers.insert(http::header::AUTHORIZATION, value(&self.authorization)?);
        headers.insert("x-amz-date", value(&self.x_amz_date)?);
        headers.insert("x-amz-content-sha256", value(&self.x_amz_content_sha256)?);
        if let Some(token) = &self.x_amz_security_token {
            headers.insert("x-amz-security-token", value(token)?);
        }
        Ok(())
    }
}

/// Headers SDKs leave unsigned because proxies rewrite them.
const UNSIGNED_HEADERS: &[&str] = &[
    "authorization",
    "user-agent",
    "expect",
    "x-amzn-trace-id",
    "connection",
    "transfer-encoding",
];

/// Signs a request: every header in `headers` except those proxies rewrite, plus the
/// `X-Amz-Date`, `x-amz-content-sha256` and (for temporary credentials)
/// `X-Amz-Security-Token` headers it adds. `path_and_query` is as it will be sent
/// (already percent-encoded). `headers` must contain `host`.
pub fn sign_request(
    credentials: &SigningCredentials,
    scope: SigningScope<'_>,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<SigV4Headers, SigningError> {
    if !headers.contains_key(http::header::HOST) {
        return Err(SigningError::MissingHost);
    }
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path_and_query, ""),
    };
    let amz_date = now.format(AMZ_DATE_FORMAT).to_string();
    let scope_date = now.format("%Y%m%d").to_string();
    let payload_hash = hex::encode(Sha256::digest(body));

    // The canonical request is computed over the headers as they will be sent, so the
    // added ones go into a copy first.
    let mut all = headers.clone();
    let mut added = SigV4Headers {
        authorization: String::new(),
        x_amz_date: amz_date.clone(),
        x_amz_content_sha256: payload_hash.clone(),
        x_amz_security_token: credentials.session_token.clone(),
    };
    added.apply(&mut all)?;
    all.remove(http::header::AUTHORIZATION);

    let mut signed: Vec<String> = all
        .keys()
        .map(|k| k.as_str().to_string())
        .filter(|k| !UNSIGNED_HEADERS.contains(&k.as_str()))
        .collect();
    signed.sort();
    signed.dedup();

    let canonical = canonical_request(
        method,
        path,
        &parse_raw_query(query),
        false,
        &all,
        &signed,
        &payload_hash,
    );
    let signature = signature_hex(credentials, scope, &amz_date, &scope_date, &canonical);
    added.authorization = format!(
        "{ALGORITHM} Credential={}/{scope_date}/{}/{}/aws4_request, SignedHeaders={}, Signature={signature}",
        credentials.access_key_id,
        scope.region,
        scope.service,
        signed.join(";")
    );
    Ok(added)
}

fn signature_hex(
    credentials: &SigningCredentials,
    scope: SigningScope<'_>,
    amz_date: &str,
    scope_date: &str,
    canonical: &[u8],
) -> String {
    let to_sign = string_to_sign(amz_date, scope_date, scope.region, scope.service, canonical);
    let key = signing_key(
        &credentials.secret_access_key,
        scope_date,
        scope.region,
        scope.service,
    );
    hex::encode(hmac(&key, to_sign.as_bytes()))
}

/// Signs an `http::Request` in place. The `host` header is taken from the URI's
/// authority when the request has none.
pub fn sign_http_request<B>(
    request: &mut http::Request<B>,
    body: &[u8],
    credentials: &SigningCredentials,
    scope: SigningScope<'_>,
    now: DateTime<Utc>,
) -> Result<(), SigningError> {
    if !request.headers().contains_key(http::header::HOST) {
        let authority = request
            .uri()
            .authority()
            .ok_or(SigningError::MissingHost)?
            .as_str()
            .to_string();
        let value = http::HeaderValue::from_str(&authority)
            .map_err(|_| SigningError::InvalidHeaderValue(authority))?;
        request.headers_mut().insert(http::header::HOST, value);
    }
    let path_and_query = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_string();
    let method = request.method().as_str().to_string();
    let signed = sign_request(
        credentials,
        scope,
        &method,
        &path_and_query,
        request.headers(),
        body,
        now,
    )?;
    signed.apply(request.headers_mut())
}

/// The request a presigned URL is for.
#[derive(Debug, Clone, Copy)]
pub struct PresignTarget<'a> {
    /// The HTTP method, e.g. `GET`.
    pub method: &'a str,
    /// The path as it will be sent (percent-encoded).
    pub path: &'a str,
    /// The query string without `?`, before the `X-Amz-*` parameters are added.
    pub query: &'a str,
    /// The `host` header the URL will be fetched with.
    pub host: &'a str,
}

/// Builds a presigned query string for `target`, valid for `expires_secs` seconds: the
/// original query plus the `X-Amz-*` parameters, with `host` the only signed header and
/// an empty body assumed.
pub fn presign_query(
    credentials: &SigningCredentials,
    scope: SigningScope<'_>,
    target: PresignTarget<'_>,
    expires_secs: u32,
    now: DateTime<Utc>,
) -> Result<String, SigningError> {
    let PresignTarget {
        method,
        path,
        query,
        host,
    } = target;
    let amz_date = now.format(AMZ_DATE_FORMAT).to_string();
    let scope_date = now.format("%Y%m%d").to_string();
    let credential = format!(
        "{}/{scope_date}/{}/{}/aws4_request",
        credentials.access_key_id, scope.region, scope.service
    );
    let mut params = vec![
        format!("X-Amz-Algorithm={ALGORITHM}"),
        format!("X-Amz-Credential={}", encode_strict(credential.as_bytes())),
        format!("X-Amz-Date={amz_date}"),
        format!("X-Amz-Expires={expires_secs}"),
        "X-Amz-SignedHeaders=host".to_string(),
    ];
    if let Some(token) = &credentials.session_token {
        params.push(format!(
            "X-Amz-Security-Token={}",
            encode_strict(token.as_bytes())
        ));
    }
    let mut full = query.to_string();
    for p in &params {
        if !full.is_empty() {
            full.push('&');
        }
        full.push_str(p);
    }
    let mut headers = HeaderMap::new();
    let host_value = http::HeaderValue::from_str(host)
        .map_err(|_| SigningError::InvalidHeaderValue(host.to_string()))?;
    headers.insert(http::header::HOST, host_value);
    let canonical = canonical_request(
        method,
        path,
        &parse_raw_query(&full),
        true,
        &headers,
        &["host".to_string()],
        EMPTY_PAYLOAD_SHA256,
    );
    let signature = signature_hex(credentials, scope, &amz_date, &scope_date, &canonical);
    full.push_str("&X-Amz-Signature=");
    full.push_str(&signature);
    Ok(full)
}

#[cfg(test)]
mod tests;
