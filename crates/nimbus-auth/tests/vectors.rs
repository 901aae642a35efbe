//! Runs the SigV4 vectors in tests/data/sigv4.json (the AWS SigV4 test suite
//! from aws-c-auth, plus vectors computed by botocore for Lambda; see
//! tests/data/README.md) against the canonicalisation and signing functions.
//!
//! Each step is checked on its own input: the string to sign is computed from
//! the *expected* canonical request and the signature from the *expected*
//! string to sign, so one bug shows up in one place instead of cascading.
//! Every case is run and every failure is reported before the test fails.

use nimbus_auth::{
    PathMode, RequestParts, canonical_request, signature, signing_key, string_to_sign,
};
use serde_json::Value;

const DATA: &str = include_str!("data/sigv4.json");

fn s<'a>(case: &'a Value, key: &str) -> &'a str {
    case[key]
        .as_str()
        .unwrap_or_else(|| panic!("case {}: field {key} missing or not a string", case["name"]))
}

fn strs<'a>(case: &'a Value, key: &str) -> Vec<&'a str> {
    case[key]
        .as_array()
        .unwrap_or_else(|| panic!("case {}: field {key} missing or not an array", case["name"]))
        .iter()
        .map(|v| v.as_str().expect("array of strings"))
        .collect()
}

fn path_mode(case: &Value) -> PathMode {
    match s(case, "path_mode") {
        "S3" => PathMode::S3,
        "Normalized" => PathMode::Normalized,
        other => panic!("case {}: unknown path_mode {other}", case["name"]),
    }
}

/// Describes a mismatch: the first differing line, then both values in full
/// (debug-escaped so whitespace and newlines are visible).
fn mismatch(name: &str, what: &str, expected: &str, got: &str) -> String {
    let first_diff = expected
        .split('\n')
        .zip(got.split('\n'))
        .position(|(e, g)| e != g)
        .unwrap_or_else(|| expected.split('\n').count().min(got.split('\n').count()));
    format!(
        "[{name}] {what} differs (first at line {}):\n  expected: {expected:?}\n  got:      {got:?}",
        first_diff + 1
    )
}

#[test]
fn sigv4_vectors() {
    let doc: Value = serde_json::from_str(DATA).expect("tests/data/sigv4.json is valid JSON");
    let cases = doc["cases"].as_array().expect("cases array");
    assert!(
        cases.len() >= 70,
        "expected the whole suite, found {} cases",
        cases.len()
    );

    let mut failures = Vec::new();
    let mut checks = 0usize;
    for case in cases {
        let name = s(case, "name");
        let headers_owned: Vec<Vec<&str>> = case["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .map(|h| {
                h.as_array()
                    .expect("header pair")
                    .iter()
                    .map(|v| v.as_str().expect("header string"))
                    .collect()
            })
            .collect();
        let headers: Vec<(&str, &str)> = headers_owned.iter().map(|h| (h[0], h[1])).collect();
        let signed = strs(case, "signed_headers");
        let expected_cr = s(case, "expected_canonical_request");
        let expected_sts = s(case, "expected_string_to_sign");
        let expected_sig = s(case, "expected_signature");

        // The query as recorded (for presigned cases: without X-Amz-Signature)
        // and, for presigned cases, the query exactly as received, which the
        // API must canonicalise the same way by leaving X-Amz-Signature out.
        let mut queries = vec![("canonical request", s(case, "query"))];
        if let Some(received) = case["received_query"].as_str() {
            queries.push((
                "canonical request (query as received, with X-Amz-Signature)",
                received,
            ));
        }
        for (what, query) in queries {
            let req = RequestParts {
                method: s(case, "method"),
                path: s(case, "path"),
                query,
                headers: &headers,
                payload_hash: s(case, "payload_hash"),
            };
            let got = canonical_request(&req, &signed, path_mode(case));
            checks += 1;
            if got != expected_cr {
                failures.push(mismatch(name, what, expected_cr, &got));
            }
        }

        let got_sts = string_to_sign(s(case, "amz_date"), s(case, "scope"), expected_cr);
        checks += 1;
        if got_sts != expected_sts {
            failures.push(mismatch(name, "string to sign", expected_sts, &got_sts));
        }

        let date = s(case, "scope")
            .split('/')
            .next()
            .expect("scope has a date");
        let key = signing_key(
            s(case, "secret"),
            date,
            s(case, "region"),
            s(case, "service"),
        );
        let got_sig = signature(&key, expected_sts);
        checks += 1;
        if got_sig != expected_sig {
            failures.push(mismatch(name, "signature", expected_sig, &got_sig));
        }
    }

    if !failures.is_empty() {
        panic!(
            "{} of {checks} checks failed over {} SigV4 vectors:\n\n{}\n",
            failures.len(),
            cases.len(),
            failures.join("\n\n")
        );
    }
}
