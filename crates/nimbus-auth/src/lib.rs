//! AWS Signature Version 4 for nimbus: the canonical request, the string to
//! sign, the signing key, and [`verify`] for incoming requests signed in the
//! `Authorization` header or presigned in the query string.
//!
//! Why hand-written: the crypto comes from `hmac` and `sha2`; what is ours is
//! the canonicalisation, and the crates that have it (`aws-sigv4`) are
//! signers: they decide which headers to sign, add `x-amz-date` and the
//! security token themselves and cannot be told "these exact headers, as
//! received". Verification needs exactly that. The module is checked
//! against the AWS SigV4 test suite (tests/data/sigv4.json) and, end to end,
//! against botocore's and aws-sdk-rust's signers.

mod canonical;
mod verify;

pub use canonical::{
    PathMode, RequestParts, canonical_request, signature, signing_key, string_to_sign, uri_encode,
};
pub use verify::{AuthError, Credential, KeyStore, MAX_SKEW_SECS, Verified, verify};

/// The hex SHA-256 of a payload, as `x-amz-content-sha256` carries it.
pub fn payload_sha256(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(body))
}

/// Signs a request in the `Authorization` header, as a client would: returns
/// the headers to add (`x-amz-date`, `authorization`). `req.headers` must
/// already hold every header to sign (at least `host`); they are all signed.
/// Used by nimbus's own tools (the benchmark) and by tests.
pub fn sign_request(
    req: &RequestParts<'_>,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    amz_date: &str,
) -> Vec<(String, String)> {
    let mut headers: Vec<(&str, &str)> = req.headers.to_vec();
    headers.push(("x-amz-date", amz_date));
    let mut names: Vec<String> = headers
        .iter()
        .map(|(n, _)| n.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    let signed: Vec<&str> = names.iter().map(String::as_str).collect();
    let parts = RequestParts {
        headers: &headers,
        ..*req
    };
    let canonical = canonical_request(&parts, &signed, PathMode::Normalized);
    let date = &amz_date[..8.min(amz_date.len())];
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let sts = string_to_sign(amz_date, &scope, &canonical);
    let sig = signature(&signing_key(secret, date, region, service), &sts);
    vec![
        ("x-amz-date".into(), amz_date.into()),
        (
            "authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={sig}",
                signed.join(";")
            ),
        ),
    ]
}
