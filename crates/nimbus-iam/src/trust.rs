//! Trust policies: who may assume a role.

use serde_json::Value;

/// Who wants to assume a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustedParty<'a> {
    /// An AWS service principal such as `lambda.amazonaws.com`.
    Service(&'a str),
    /// An IAM principal by ARN (a user, a role session, the root).
    Principal(&'a str),
}

fn strings(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn action_matches(pattern: &str, action: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let a = action.to_ascii_lowercase();
    p == "*"
        || p == a
        || p.strip_suffix('*')
            .is_some_and(|prefix| a.starts_with(prefix))
}

fn names(statement: &Value, account: &str, who: &TrustedParty<'_>) -> bool {
    match (statement.get("Principal"), who) {
        (Some(Value::String(s)), _) => s == "*",
        (Some(Value::Object(p)), TrustedParty::Service(svc)) => {
            strings(p.get("Service")).contains(svc)
        }
        (Some(Value::Object(p)), TrustedParty::Principal(arn)) => {
            strings(p.get("AWS")).iter().any(|named| {
                // An account id or its root ARN stands for every principal of
                // the account.
                *named == "*"
                    || named == arn
                    || *named == account
                    || *named == format!("arn:aws:iam::{account}:root")
            })
        }
        _ => false,
    }
}

/// Evaluates a trust policy for `sts:AssumeRole` by `who`.
pub(crate) fn allows(trust_policy: &str, account: &str, who: &TrustedParty<'_>) -> bool {
    let Ok(doc) = serde_json::from_str::<Value>(trust_policy) else {
        return false;
    };
    let statements: Vec<&Value> = match doc.get("Statement") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(s @ Value::Object(_)) => vec![s],
        _ => return false,
    };
    let applies = |st: &Value, effect: &str| {
        st.get("Effect").and_then(Value::as_str) == Some(effect)
            && strings(st.get("Action"))
                .iter()
                .any(|a| action_matches(a, "sts:AssumeRole"))
            && names(st, account, who)
    };
    let denied = statements.iter().any(|st| applies(st, "Deny"));
    let allowed = statements.iter().any(|st| applies(st, "Allow"));
    allowed && !denied
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAMBDA: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

    #[test]
    fn service_and_account_principals() {
        assert!(allows(
            LAMBDA,
            "000000000000",
            &TrustedParty::Service("lambda.amazonaws.com")
        ));
        assert!(!allows(
            LAMBDA,
            "000000000000",
            &TrustedParty::Service("s3.amazonaws.com")
        ));
        assert!(!allows(
            LAMBDA,
            "000000000000",
            &TrustedParty::Principal("arn:aws:iam::000000000000:user/bob")
        ));
        let account = r#"{"Statement":{"Effect":"Allow","Principal":{"AWS":"000000000000"},"Action":["sts:*"]}}"#;
        assert!(allows(
            account,
            "000000000000",
            &TrustedParty::Principal("arn:aws:iam::000000000000:user/bob")
        ));
        let denied = r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"*"},{"Effect":"Deny","Principal":{"AWS":"arn:aws:iam::000000000000:user/bob"},"Action":"sts:AssumeRole"}]}"#;
        assert!(!allows(
            denied,
            "000000000000",
            &TrustedParty::Principal("arn:aws:iam::000000000000:user/bob")
        ));
        assert!(allows(
            denied,
            "000000000000",
            &TrustedParty::Principal("arn:aws:iam::000000000000:user/eve")
        ));
        assert!(!allows(
            "not json",
            "000000000000",
            &TrustedParty::Service("lambda.amazonaws.com")
        ));
    }
}
