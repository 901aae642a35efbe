//! Parsing (tests/data/parse.json): the documents IAM refuses, each with
//! the MalformedPolicyDocument message IAM gives for it (checked in IAM's
//! order, so that the message is the one IAM picks among several faults),
//! and documents IAM accepts.

use nimbus_policy::{Policy, PolicyError};
use serde_json::Value;

const DATA: &str = include_str!("data/parse.json");

fn parse(case: &Value) -> Result<Policy, PolicyError> {
    let doc = match &case["document"] {
        Value::String(raw) => raw.clone(),
        v => v.to_string(),
    };
    match case["kind"].as_str().unwrap() {
        "identity" => Policy::parse_identity(&doc),
        "any" => Policy::parse(&doc),
        other => panic!("unknown kind {other}"),
    }
}

#[test]
fn refused_documents_get_iams_message() {
    let data: Value = serde_json::from_str(DATA).unwrap();
    let mut failures = Vec::new();
    let errors = data["errors"].as_array().unwrap();
    for case in errors {
        let name = case["name"].as_str().unwrap();
        let want = case["message"].as_str().unwrap();
        match parse(case) {
            Ok(_) => failures.push(format!("{name}: accepted, expected \"{want}\"")),
            Err(e) if e.message() != want => failures.push(format!(
                "{name}: \"{}\" ({}), expected \"{want}\"",
                e.message(),
                e.detail()
            )),
            Err(e) => assert_eq!(e.to_string(), want),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        errors.len(),
        failures.join("\n")
    );
}

#[test]
fn accepted_documents_parse() {
    let data: Value = serde_json::from_str(DATA).unwrap();
    for case in data["valid"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let policy = parse(case).unwrap_or_else(|e| panic!("{name}: {e} ({})", e.detail()));
        assert_eq!(
            policy.version(),
            case["version"].as_str().unwrap(),
            "{name}"
        );
        if case["kind"] == "identity" {
            // What CreatePolicy takes, any policy may be.
            let mut any = case.clone();
            any["kind"] = "any".into();
            parse(&any).unwrap();
        }
    }
}

#[test]
fn errors_name_the_fault_and_the_code() {
    let e = Policy::parse(r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Foo":1}}"#)
        .unwrap_err();
    assert_eq!(e.message(), "Syntax errors in policy.");
    assert_eq!(e.detail(), "statement 1: unknown field \"Foo\"");
    assert_eq!(PolicyError::CODE, "MalformedPolicyDocument");
    let e = Policy::parse(
        r#"{"Version":"2012-10-17","Statement":{"Effect":"Allow","Action":"s3:*","Resource":"*","Condition":{"StringEqualz":{"a":"b"}}}}"#,
    )
    .unwrap_err();
    assert_eq!(
        e.detail(),
        "statement 1: unknown condition operator \"StringEqualz\""
    );
}
