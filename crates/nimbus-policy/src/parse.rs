//! Reading a policy document, with IAM's checks in IAM's order (so that a
//! document with several faults gets the message IAM gives): syntax, the
//! version, "legacy parsing", unique Sids, actions, resources, resource
//! formats, action prefixes.

use serde_json::{Map, Value};

use crate::condition::{self, Condition};
use crate::error::PolicyError;
use crate::pattern::{Pattern, Syntax, VarDef};
use crate::principal::PrincipalSet;
use crate::{Policy, Statement};

/// What kind of document is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Any policy: identity-based, resource-based or a trust policy.
    Any,
    /// An identity-based policy as IAM's CreatePolicy takes it.
    Identity,
}

const TOP_FIELDS: [&str; 3] = ["Version", "Id", "Statement"];
const STATEMENT_FIELDS: [&str; 9] = [
    "Sid",
    "Effect",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Principal",
    "NotPrincipal",
    "Condition",
];
const IAM_PATHS: [&str; 13] = [
    "user/",
    "federated-user/",
    "role/",
    "group/",
    "instance-profile/",
    "mfa/",
    "server-certificate/",
    "policy/",
    "sms-mfa/",
    "saml-provider/",
    "oidc-provider/",
    "report/",
    "access-report/",
];

/// A string or a list of strings, as Action, Resource and their negations
/// take it.
fn string_list(v: &Value) -> Option<Vec<&str>> {
    match v {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(a) => a.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

/// The element present of a pair such as Action / NotAction, and whether
/// it is the negated one.
fn either<'a>(st: &'a Map<String, Value>, name: &str) -> Option<(&'a Value, bool)> {
    st.get(name)
        .map(|v| (v, false))
        .or_else(|| st.get(&format!("Not{name}")).map(|v| (v, true)))
}

fn check_statement(st: &Map<String, Value>, n: usize) -> Result<(), PolicyError> {
    let bad = |why: String| PolicyError::syntax(format!("statement {n}: {why}"));
    if let Some(k) = st.keys().find(|k| !STATEMENT_FIELDS.contains(&k.as_str())) {
        return Err(bad(format!("unknown field \"{k}\"")));
    }
    for pair in ["Action", "Resource", "Principal"] {
        if st.contains_key(pair) && st.contains_key(&format!("Not{pair}")) {
            return Err(bad(format!("both {pair} and Not{pair}")));
        }
    }
    match st.get("Effect") {
        Some(Value::String(e))
            if e.eq_ignore_ascii_case("allow") || e.eq_ignore_ascii_case("deny") => {}
        Some(e) => return Err(bad(format!("Effect must be Allow or Deny, not {e}"))),
        None => return Err(bad("missing Effect".into())),
    }
    for name in ["Action", "NotAction", "Resource", "NotResource"] {
        if st.get(name).is_some_and(|v| string_list(v).is_none()) {
            return Err(bad(format!("{name} must be a string or a list of strings")));
        }
    }
    if st.get("Sid").is_some_and(|v| !v.is_string()) {
        return Err(bad("Sid must be a string".into()));
    }
    if let Some(c) = st.get("Condition") {
        condition::check_syntax(c).map_err(|e| bad(e.detail().to_string()))?;
    }
    for name in ["Principal", "NotPrincipal"] {
        if let Some(p) = st.get(name) {
            PrincipalSet::parse(p, name).map_err(|e| bad(e.detail().to_string()))?;
        }
    }
    Ok(())
}

/// IAM's complaint about a resource ARN that is not "legacy parsing".
fn resource_format_error(r: &str) -> Option<String> {
    if r == "*" {
        return None;
    }
    let Some((_, rest)) = r.split_once(':') else {
        return Some(format!("Resource {r} must be in ARN format or \"*\"."));
    };
    let (partition, after) = match rest.split_once(':') {
        Some((p, a)) => (p, Some(a)),
        None => (rest, None),
    };
    if partition != "aws" {
        let rem: Vec<&str> = after.unwrap_or("").split(':').collect();
        let a1 = if !rem[0].is_empty() || rem.len() > 1 {
            rem[0]
        } else {
            "*"
        };
        let a2 = rem.get(1).copied().unwrap_or("*");
        let a3 = rem.get(2).copied().unwrap_or("*");
        let a4 = if rem.len() > 3 {
            rem[3..].join(":")
        } else {
            "*".to_string()
        };
        return Some(format!(
            "Partition \"{partition}\" is not valid for resource \"arn:{partition}:{a1}:{a2}:{a3}:{a4}\"."
        ));
    }
    let Some(after) = after else {
        return Some("Resource vendor must be fully qualified and cannot contain regexes.".into());
    };
    let (service, rest) = after.split_once(':').unwrap_or((after, ""));
    if !rest.starts_with(':') {
        match service {
            "iam" => {
                return Some(format!(
                    "IAM resource {r} cannot contain region information."
                ));
            }
            "s3" => return Some(format!("Resource {r} can not contain region information.")),
            _ => {}
        }
    }
    let path = rest.splitn(3, ':').nth(2).unwrap_or("");
    if service == "iam" && path != "*" && !IAM_PATHS.iter().any(|p| path.starts_with(p)) {
        return Some(format!(
            "IAM resource path must either be \"*\" or start with {}.",
            IAM_PATHS.join(", ")
        ));
    }
    None
}

/// A resource IAM's legacy parser refuses: a `::` in an ARN of fewer than
/// six components, or no service.
fn resource_fails_legacy(r: &str) -> bool {
    r != "*"
        && ((r.matches(':').count() < 5 && r.contains("::"))
            || r.split(':').nth(2).is_none_or(str::is_empty))
}

fn action_error(a: &str) -> Option<String> {
    let parts: Vec<&str> = a.split(':').collect();
    if parts.len() == 1 && a != "*" {
        return Some(
            "Actions/Conditions must be prefaced by a vendor, e.g., iam, sdb, ec2, etc.".into(),
        );
    }
    if parts.len() > 2 {
        return Some("Actions/Condition can contain only one colon.".into());
    }
    let vendor = parts[0];
    if vendor != "*"
        && !vendor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Some(format!("Vendor {vendor} is not valid"));
    }
    None
}

pub(crate) fn parse(json: &str, kind: Kind) -> Result<Policy, PolicyError> {
    // 1. Syntax.
    let doc: Value =
        serde_json::from_str(json).map_err(|e| PolicyError::syntax(format!("not JSON: {e}")))?;
    let top = doc
        .as_object()
        .ok_or_else(|| PolicyError::syntax("the document is not a JSON object"))?;
    if let Some(k) = top.keys().find(|k| !TOP_FIELDS.contains(&k.as_str())) {
        return Err(PolicyError::syntax(format!("unknown field \"{k}\"")));
    }
    let version = match top.get("Version") {
        None => None,
        Some(Value::String(v)) if v == "2012-10-17" || v == "2008-10-17" => Some(v.as_str()),
        Some(v) => {
            return Err(PolicyError::syntax(format!(
                "Version must be 2012-10-17 or 2008-10-17, not {v}"
            )));
        }
    };
    if top.get("Id").is_some_and(|v| !v.is_string()) {
        return Err(PolicyError::syntax("Id must be a string"));
    }
    let statements: Vec<&Map<String, Value>> = match top.get("Statement") {
        Some(Value::Object(st)) => vec![st],
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(Value::as_object)
            .collect::<Option<_>>()
            .ok_or_else(|| PolicyError::syntax("a statement is not a JSON object"))?,
        Some(_) => {
            return Err(PolicyError::syntax(
                "Statement must be an object or a non-empty list",
            ));
        }
        None => return Err(PolicyError::syntax("missing Statement")),
    };
    for (i, st) in statements.iter().enumerate() {
        check_statement(st, i + 1)?;
    }

    // 2. Version, and no principal in an identity policy.
    if kind == Kind::Identity {
        if version != Some("2012-10-17") {
            return Err(PolicyError::plain(
                "Policy document must be version 2012-10-17 or greater.",
            ));
        }
        if statements
            .iter()
            .any(|st| st.contains_key("Principal") || st.contains_key("NotPrincipal"))
        {
            return Err(PolicyError::plain(
                "Policy document should not specify a principal.",
            ));
        }
    }
    let variables = version == Some("2012-10-17");

    // 3. Legacy parsing: exact Effect, condition values, resource ARNs.
    let mut compiled: Vec<(Vec<Condition>, Vec<VarDef>)> = Vec::new();
    for (i, st) in statements.iter().enumerate() {
        if !matches!(
            st.get("Effect").and_then(Value::as_str),
            Some("Allow" | "Deny")
        ) {
            return Err(PolicyError::legacy(format!(
                "statement {}: Effect must be spelt Allow or Deny",
                i + 1
            )));
        }
        let mut vars = Vec::new();
        let conditions = match st.get("Condition") {
            Some(c) => condition::compile(c, variables, &mut vars)?,
            None => Vec::new(),
        };
        compiled.push((conditions, vars));
    }
    let mut resource_error = None;
    for st in &statements {
        if let Some((v, _)) = either(st, "Resource") {
            for r in string_list(v).unwrap_or_default() {
                if resource_error.is_some() {
                    break;
                }
                resource_error = resource_format_error(r);
                if resource_error.is_none() && resource_fails_legacy(r) {
                    return Err(PolicyError::legacy(format!("resource \"{r}\"")));
                }
            }
        }
    }

    // 4. Unique Sids.
    let mut sids: Vec<&str> = Vec::new();
    for st in &statements {
        if let Some(sid) = st
            .get("Sid")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            if sids.contains(&sid) {
                return Err(PolicyError::plain(
                    "Statement IDs (SID) in a single policy must be unique.",
                ));
            }
            sids.push(sid);
        }
    }

    // 5, 6. Actions and resources present.
    let present = |st: &Map<String, Value>, name: &str| {
        either(st, name).is_some_and(|(v, _)| string_list(v).is_some_and(|l| !l.is_empty()))
    };
    if statements.iter().any(|st| !present(st, "Action")) {
        return Err(PolicyError::plain("Policy statement must contain actions."));
    }
    for st in &statements {
        // A trust policy names no resource: the role it is attached to is.
        let trust = kind == Kind::Any
            && either(st, "Principal").is_some()
            && either(st, "Resource").is_none();
        if !trust && !present(st, "Resource") {
            return Err(PolicyError::plain(
                "Policy statement must contain resources.",
            ));
        }
    }

    // 7. Resource formats.
    if let Some(e) = resource_error {
        return Err(PolicyError::plain(e));
    }

    // 8. Action prefixes.
    for name in ["Action", "NotAction"] {
        for st in &statements {
            for a in st.get(name).and_then(string_list).unwrap_or_default() {
                if let Some(e) = action_error(a) {
                    return Err(PolicyError::plain(e));
                }
            }
        }
    }

    // Compile.
    let mut policy = Policy {
        version: if variables {
            "2012-10-17"
        } else {
            "2008-10-17"
        },
        allow: Vec::new(),
        deny: Vec::new(),
    };
    for (st, (conditions, mut vars)) in statements.iter().zip(compiled) {
        let literal = Syntax {
            wildcards: true,
            variables: false,
        };
        let (actions, not_action) = either(st, "Action").unwrap_or((&Value::Null, false));
        let actions = string_list(actions)
            .unwrap_or_default()
            .into_iter()
            .map(|a| Pattern::compile(a, literal, &mut vars))
            .collect();
        let resources = either(st, "Resource").map(|(v, not)| {
            let syntax = Syntax {
                wildcards: true,
                variables,
            };
            let list: Vec<Pattern> = string_list(v)
                .unwrap_or_default()
                .into_iter()
                .map(|r| Pattern::compile(r, syntax, &mut vars))
                .collect();
            (list, not)
        });
        let principal = match either(st, "Principal") {
            Some((v, not)) => Some((PrincipalSet::parse(v, "Principal")?, not)),
            None => None,
        };
        let statement = Statement {
            actions,
            not_action,
            resources,
            principal,
            conditions,
            vars,
        };
        if st.get("Effect").and_then(Value::as_str) == Some("Deny") {
            policy.deny.push(statement);
        } else {
            policy.allow.push(statement);
        }
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_formats() {
        assert_eq!(resource_format_error("arn:aws:s3:::b/*"), None);
        assert_eq!(
            resource_format_error("a:b:cadfsdf").as_deref(),
            Some("Partition \"b\" is not valid for resource \"arn:b:cadfsdf:*:*:*\".")
        );
        assert_eq!(
            resource_format_error("aws:s3:::example_bucket").as_deref(),
            Some("Partition \"s3\" is not valid for resource \"arn:s3:::example_bucket:*\".")
        );
        assert_eq!(resource_format_error("arn:aws:iam::123456789012:*"), None);
        assert!(resource_fails_legacy("arn:aws:s3::example_bucket"));
        assert!(resource_fails_legacy("arn:aws::::example_bucket"));
        assert!(!resource_fails_legacy("arn:aws:fdsasf"));
    }
}
