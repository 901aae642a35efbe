//! nimbus_auth::verify and canonical_request on requests made of the input:
//! the first line is the method, then the path, the query, the payload
//! hash, then one header per line (`name: value`).
//!
//! When the input's first byte is odd the request is first signed with
//! nimbus_auth::sign_request (as a client would) and must then verify:
//! signing and verifying must agree on every request they can express.

#![no_main]

use chrono::{DateTime, NaiveDateTime, Utc};
use libfuzzer_sys::fuzz_target;
use nimbus_auth::{
    Credential, KeyStore, PathMode, RequestParts, canonical_request, sign_request, verify,
};

struct Keys;

impl KeyStore for Keys {
    fn lookup(&self, access_key_id: &str) -> Option<Credential> {
        (access_key_id == "AKIDFUZZ").then(|| Credential {
            secret_access_key: "fuzz-secret".into(),
            session_token: None,
            principal: "arn:aws:iam::111122223333:user/fuzz".into(),
        })
    }
}

const AMZ_DATE: &str = "20250101T120000Z";

fn now() -> DateTime<Utc> {
    NaiveDateTime::parse_from_str(AMZ_DATE, "%Y%m%dT%H%M%SZ")
        .unwrap()
        .and_utc()
}

/// A header name as HTTP allows it (a token), in the cases clients send.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sign = data.first().is_some_and(|b| b & 1 == 1);
    let mut lines = text.split('\n');
    let method = lines.next().unwrap_or("");
    let path = lines.next().unwrap_or("");
    let query = lines.next().unwrap_or("");
    let payload_hash = lines.next().unwrap_or("");
    let headers: Vec<(&str, &str)> = lines
        .map(|l| l.split_once(':').unwrap_or((l, "")))
        .map(|(n, v)| (n, v.trim()))
        .collect();
    let req = RequestParts {
        method,
        path,
        query,
        headers: &headers,
        payload_hash,
    };

    // Arbitrary requests: refused or accepted, never a panic.
    for mode in [PathMode::Normalized, PathMode::S3] {
        let _ = verify(&req, mode, now(), &Keys);
        let mut names: Vec<String> = headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let _ = canonical_request(&req, &names, mode);
    }

    if !sign {
        return;
    }
    // What a client signs verifies. Headers that carry the signature are
    // the signer's to add; header names are HTTP tokens.
    let mut to_sign: Vec<(&str, &str)> = headers
        .iter()
        .copied()
        .filter(|(n, _)| is_token(n))
        .filter(|(n, _)| {
            !["authorization", "x-amz-date", "x-amz-security-token"]
                .iter()
                .any(|h| n.eq_ignore_ascii_case(h))
        })
        .collect();
    if !to_sign.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        to_sign.push(("host", "fuzz.example"));
    }
    let query: String = query
        .split('&')
        .filter(|p| !p.starts_with("X-Amz-"))
        .collect::<Vec<_>>()
        .join("&");
    let unsigned = RequestParts {
        headers: &to_sign,
        query: &query,
        ..req
    };
    let added = sign_request(
        &unsigned,
        "AKIDFUZZ",
        "fuzz-secret",
        "us-east-1",
        "lambda",
        AMZ_DATE,
    );
    let mut all = to_sign.clone();
    all.extend(added.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let signed = RequestParts {
        headers: &all,
        ..unsigned
    };
    let verified = verify(&signed, PathMode::Normalized, now(), &Keys);
    assert!(
        verified.is_ok(),
        "a request signed by sign_request does not verify: {verified:?}\n{signed:?}"
    );
});
