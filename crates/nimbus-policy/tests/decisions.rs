//! The decision table (tests/data/decisions.json): IAM's evaluation logic,
//! case by case. Each rule of the logic has cases with at least two
//! different expected decisions, so an evaluator that ignores the rule
//! fails one of them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use nimbus_policy::{Context, Decision, Policy, Principal, Request, evaluate};
use serde_json::{Map, Value};

const DATA: &str = include_str!("data/decisions.json");

/// Every rule the table must cover.
const RULES: &[&str] = &[
    "deny beats allow",
    "implicit deny",
    "statement order irrelevant",
    "NotAction",
    "NotResource",
    "action wildcards",
    "resource wildcards",
    "action case-insensitive",
    "resource case-sensitive",
    "condition key case-insensitive",
    "StringEquals case-sensitive",
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
    "NumericEquals",
    "NumericNotEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
    "DateEquals",
    "DateNotEquals",
    "DateLessThan",
    "DateLessThanEquals",
    "DateGreaterThan",
    "DateGreaterThanEquals",
    "Bool",
    "BinaryEquals",
    "IpAddress",
    "NotIpAddress",
    "ArnEquals",
    "ArnLike",
    "ArnNotEquals",
    "ArnNotLike",
    "Null",
    "IfExists",
    "ForAllValues",
    "ForAnyValue",
    "condition AND/OR",
    "missing key",
    "policy variables",
    "variable default",
    "variable escapes",
    "2008 no variables",
    "service principal",
    "account principal",
    "user and role principals",
    "Principal wildcard",
    "NotPrincipal",
    "identity OR resource",
    "AWSLambdaBasicExecutionRole",
    "trust policy lambda",
];

fn data() -> Value {
    serde_json::from_str(DATA).expect("decisions.json is JSON")
}

fn principal(v: &Value, named: &Map<String, Value>) -> Principal {
    let v = match v {
        Value::String(name) => &named[name],
        v => v,
    };
    match v["service"].as_str() {
        Some(s) => Principal::service(s),
        None => Principal {
            arn: v["arn"].as_str().unwrap().to_string(),
            account: v["account"].as_str().unwrap().to_string(),
            service: None,
        },
    }
}

fn policy(v: &Value, named: &Map<String, Value>) -> Policy {
    let doc = match v {
        Value::String(name) => &named[name],
        v => v,
    };
    Policy::parse(&doc.to_string()).unwrap_or_else(|e| panic!("{doc}: {e} ({})", e.detail()))
}

fn context(v: Option<&Value>, now_epoch: u64) -> Context {
    let mut ctx = Context::at(UNIX_EPOCH + Duration::from_secs(now_epoch));
    for (k, v) in v.and_then(Value::as_object).into_iter().flatten() {
        ctx = match v {
            Value::Array(a) => ctx.with_values(k, a.iter().map(|x| x.as_str().unwrap())),
            v => ctx.with(k, v.as_str().unwrap()),
        };
    }
    ctx
}

fn decision(s: &str) -> Decision {
    match s {
        "Allow" => Decision::Allow,
        "ExplicitDeny" => Decision::ExplicitDeny,
        "ImplicitDeny" => Decision::ImplicitDeny,
        other => panic!("unknown decision {other}"),
    }
}

#[test]
fn every_case_decides_as_iam_does() {
    let data = data();
    let principals = data["principals"].as_object().unwrap();
    let policies = data["policies"].as_object().unwrap();
    let now = data["now_epoch_seconds"].as_u64().unwrap();
    let cases = data["cases"].as_array().unwrap();
    let mut failures = Vec::new();
    for c in cases {
        let identity: Vec<Policy> = c["identity"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| policy(p, policies))
            .collect();
        let identity: Vec<&Policy> = identity.iter().collect();
        let resource_policy = c.get("resource_policy").map(|p| policy(p, policies));
        let who = principal(&c["principal"], principals);
        let ctx = context(c.get("context"), now);
        let req = Request {
            principal: &who,
            action: c["action"].as_str().unwrap(),
            resource: c["resource"].as_str().unwrap(),
            context: &ctx,
        };
        let got = evaluate(&identity, resource_policy.as_ref(), &req);
        let want = decision(c["expect"].as_str().unwrap());
        if got != want {
            failures.push(format!(
                "[{}] {}: expected {want:?}, got {got:?}",
                c["rule"].as_str().unwrap(),
                c["name"].as_str().unwrap()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn every_rule_has_cases_with_two_outcomes() {
    let data = data();
    let mut outcomes: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for c in data["cases"].as_array().unwrap() {
        outcomes
            .entry(c["rule"].as_str().unwrap())
            .or_default()
            .insert(c["expect"].as_str().unwrap());
    }
    for rule in RULES {
        let seen = outcomes.get(rule).map_or(0, BTreeSet::len);
        assert!(
            seen >= 2,
            "rule {rule:?} has cases with {seen} distinct outcome(s)"
        );
    }
    let unknown: Vec<_> = outcomes.keys().filter(|r| !RULES.contains(r)).collect();
    assert!(
        unknown.is_empty(),
        "cases for rules not in RULES: {unknown:?}"
    );
}

/// The same question, asked with the policy's statements in every rotation,
/// gets the same answer.
#[test]
fn statement_order_does_not_change_any_decision() {
    let data = data();
    let principals = data["principals"].as_object().unwrap();
    let policies = data["policies"].as_object().unwrap();
    let now = data["now_epoch_seconds"].as_u64().unwrap();
    let mut checked = 0;
    for c in data["cases"].as_array().unwrap() {
        for p in c["identity"].as_array().unwrap() {
            let doc = match p {
                Value::String(name) => policies[name.as_str()].clone(),
                v => v.clone(),
            };
            let Some(statements) = doc["Statement"].as_array().filter(|s| s.len() > 1) else {
                continue;
            };
            let who = principal(&c["principal"], principals);
            let ctx = context(c.get("context"), now);
            let req = Request {
                principal: &who,
                action: c["action"].as_str().unwrap(),
                resource: c["resource"].as_str().unwrap(),
                context: &ctx,
            };
            let mut answers = BTreeSet::new();
            for k in 0..statements.len() {
                let mut rotated = statements.clone();
                rotated.rotate_left(k);
                let mut d = doc.clone();
                d["Statement"] = Value::Array(rotated);
                let p = Policy::parse(&d.to_string()).unwrap();
                answers.insert(format!("{:?}", evaluate(&[&p], None, &req)));
            }
            assert_eq!(answers.len(), 1, "{}: {answers:?}", c["name"]);
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} multi-statement policies");
}
