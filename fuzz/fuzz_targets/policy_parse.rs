//! Policy::parse and Policy::parse_identity on arbitrary UTF-8; what parses
//! is evaluated against fixed requests, as an identity policy and as a
//! resource policy. Checks that nothing panics and that what CreatePolicy
//! accepts (parse_identity) any policy accepts (parse).

#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use nimbus_policy::{Context, Policy, Principal, Request, evaluate};

struct Fixture {
    principals: Vec<Principal>,
    context: Context,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| Fixture {
        principals: vec![
            Principal::from_arn("arn:aws:iam::111122223333:user/alice"),
            Principal::from_arn("arn:aws:sts::111122223333:assumed-role/fn-role/session"),
            Principal::from_arn("arn:aws:iam::111122223333:root"),
            Principal::service("lambda.amazonaws.com"),
        ],
        context: Context::at(UNIX_EPOCH + Duration::from_secs(1_748_779_200))
            .with("aws:SourceIp", "203.0.113.7")
            .with("aws:SourceArn", "arn:aws:s3:::my-bucket")
            .with("aws:SourceAccount", "111122223333")
            .with("aws:SecureTransport", "true")
            .with("s3:max-keys", "10")
            .with("s3:prefix", "home/alice/")
            .with_values("aws:TagKeys", ["team", "cost-center"]),
    })
}

const REQUESTS: &[(&str, &str)] = &[
    (
        "lambda:InvokeFunction",
        "arn:aws:lambda:us-east-1:111122223333:function:demo",
    ),
    ("s3:GetObject", "arn:aws:s3:::home/alice/notes.txt"),
    ("sts:AssumeRole", "arn:aws:iam::111122223333:role/fn-role"),
    ("logs:DescribeLogGroups", "*"),
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let any = Policy::parse(text);
    let identity = Policy::parse_identity(text);
    if identity.is_ok() {
        assert!(any.is_ok(), "parse_identity accepted what parse refused");
    }
    if let Err(e) = &any {
        assert!(!e.message().is_empty());
    }
    let Ok(policy) = any else {
        return;
    };
    let f = fixture();
    for principal in &f.principals {
        for (action, resource) in REQUESTS {
            let req = Request {
                principal,
                action,
                resource,
                context: &f.context,
            };
            let a = evaluate(&[&policy], None, &req);
            let b = evaluate(&[], Some(&policy), &req);
            // Deterministic.
            assert_eq!(a, evaluate(&[&policy], None, &req));
            // An explicit Deny in either place wins over the other's Allow.
            let both = evaluate(&[&policy], Some(&policy), &req);
            if a == nimbus_policy::Decision::ExplicitDeny
                || b == nimbus_policy::Decision::ExplicitDeny
            {
                assert_eq!(both, nimbus_policy::Decision::ExplicitDeny);
            }
        }
    }
});
