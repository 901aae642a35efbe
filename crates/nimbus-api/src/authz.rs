//! Authorisation decisions the API makes itself. Today: whether a role's
//! trust policy lets a caller assume it.

use nimbus_auth::Verified;
use nimbus_iam::{IamService, Role};
use serde_json::Value;

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

/// Whether the trust policy of `role` allows `sts:AssumeRole` by the
/// verified caller: an Allow statement naming the caller (its ARN, its
/// account's root or id, or `*`) and no Deny that does.
pub(crate) fn trust_allows(iam: &IamService, role: &Role, verified: &Verified) -> bool {
    let Ok(doc) = serde_json::from_str::<Value>(&role.trust_policy) else {
        return false;
    };
    let caller = iam
        .caller(&verified.access_key_id)
        .map(|(_, arn)| arn)
        .unwrap_or_default();
    let account = iam.account_id();
    let statements = match doc.get("Statement") {
        Some(Value::Array(a)) => a.iter().collect::<Vec<_>>(),
        Some(s @ Value::Object(_)) => vec![s],
        _ => return false,
    };
    let names_caller = |st: &Value| match st.get("Principal") {
        Some(Value::String(s)) => s == "*",
        Some(Value::Object(p)) => strings(p.get("AWS")).iter().any(|who| {
            *who == "*"
                || *who == caller
                || *who == account
                || *who == format!("arn:aws:iam::{account}:root")
        }),
        _ => false,
    };
    let is_assume = |st: &Value| {
        strings(st.get("Action"))
            .iter()
            .any(|a| action_matches(a, "sts:AssumeRole"))
    };
    let effect = |st: &Value, e: &str| st.get("Effect").and_then(Value::as_str) == Some(e);
    let denied = statements
        .iter()
        .any(|st| effect(st, "Deny") && is_assume(st) && names_caller(st));
    let allowed = statements
        .iter()
        .any(|st| effect(st, "Allow") && is_assume(st) && names_caller(st));
    allowed && !denied
}
