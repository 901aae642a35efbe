//! IAM policy documents for nimbus: parsing, with IAM's
//! `MalformedPolicyDocument` messages, and IAM's evaluation logic for the
//! policies of one account.
//!
//! ```
//! use nimbus_policy::{Context, Decision, Policy, Principal, Request, evaluate};
//!
//! let role_policy = Policy::parse(r#"{
//!     "Version": "2012-10-17",
//!     "Statement": [{
//!         "Effect": "Allow",
//!         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
//!         "Resource": "*"
//!     }]
//! }"#).unwrap();
//! let who = Principal::from_arn("arn:aws:sts::123456789012:assumed-role/fn-role/fn");
//! let ctx = Context::new();
//! let req = Request {
//!     principal: &who,
//!     action: "logs:PutLogEvents",
//!     resource: "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/fn:*",
//!     context: &ctx,
//! };
//! assert_eq!(evaluate(&[&role_policy], None, &req), Decision::Allow);
//! let req = Request { action: "s3:GetObject", resource: "arn:aws:s3:::b/k", ..req };
//! assert_eq!(evaluate(&[&role_policy], None, &req), Decision::ImplicitDeny);
//! ```
//!
//! What is implemented, from IAM's documentation: `Version` 2012-10-17 and
//! 2008-10-17 (the default; no policy variables); `Statement` as an object
//! or a list, in any order; `Effect`; `Action` / `NotAction` (wildcards,
//! case-insensitive); `Resource` / `NotResource` (wildcards within each
//! colon-separated ARN component, case-sensitive); `Principal` /
//! `NotPrincipal` (`"*"`, accounts, users, roles and their sessions,
//! services); `Condition` with every operator of IAM's list, `...IfExists`,
//! `ForAllValues:` / `ForAnyValue:`; policy variables with defaults and the
//! `${*}`, `${?}`, `${$}` escapes. Parsing and evaluation do no I/O;
//! evaluation allocates only for statements that use policy variables.

mod condition;
mod context;
mod error;
mod parse;
mod pattern;
mod principal;
mod time;

pub use context::Context;
pub use error::PolicyError;
pub use principal::Principal;

use condition::{Condition, Vals};
use pattern::{Compare, Pattern, VarDef};
use principal::PrincipalSet;

/// A parsed IAM policy document (identity-based, resource-based or a role's
/// trust policy), compiled for evaluation.
#[derive(Debug, Clone)]
pub struct Policy {
    version: &'static str,
    allow: Vec<Statement>,
    deny: Vec<Statement>,
}

/// One statement, compiled.
#[derive(Debug, Clone)]
struct Statement {
    actions: Vec<Pattern>,
    not_action: bool,
    /// None in a trust policy, which names no resource.
    resources: Option<(Vec<Pattern>, bool)>,
    /// The element and whether it is `NotPrincipal`.
    principal: Option<(PrincipalSet, bool)>,
    conditions: Vec<Condition>,
    vars: Vec<VarDef>,
}

impl Policy {
    /// Parses a policy document of any kind: an identity-based policy, a
    /// resource-based policy or a trust policy (whose statements, having a
    /// `Principal`, may leave out `Resource`). `Version` may be 2012-10-17,
    /// 2008-10-17 or absent (2008-10-17, without policy variables).
    ///
    /// Errors carry IAM's `MalformedPolicyDocument` message: "Syntax errors
    /// in policy." for bad JSON, unknown fields, wrong types, a bad Effect
    /// or Version and unknown condition operators; "The policy failed
    /// legacy parsing" for a misspelt Effect (`allow`), bad dates and
    /// malformed ARNs; "Policy statement must contain actions." /
    /// "...resources."; "Resource x must be in ARN format or \"*\"."; and
    /// the others IAM gives, checked in IAM's order.
    pub fn parse(json: &str) -> Result<Policy, PolicyError> {
        parse::parse(json, parse::Kind::Any)
    }

    /// Parses an identity-based policy as IAM's CreatePolicy does: on top
    /// of [`Policy::parse`], `Version` must be 2012-10-17 ("Policy document
    /// must be version 2012-10-17 or greater.") and no statement may name a
    /// principal ("Policy document should not specify a principal.").
    pub fn parse_identity(json: &str) -> Result<Policy, PolicyError> {
        parse::parse(json, parse::Kind::Identity)
    }

    /// The policy language version: `2012-10-17` or `2008-10-17`.
    pub fn version(&self) -> &'static str {
        self.version
    }
}

/// One authorisation question.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub principal: &'a Principal,
    /// `service:Action`, e.g. `lambda:InvokeFunction`.
    pub action: &'a str,
    /// The resource's ARN, or `*` for actions on no particular resource.
    pub resource: &'a str,
    pub context: &'a Context,
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    Allow,
    /// A `Deny` statement applies.
    ExplicitDeny,
    /// Nothing allows the request.
    ImplicitDeny,
}

/// IAM's evaluation logic for one account: an explicit `Deny` in any policy
/// wins; otherwise the request is allowed if an identity-based policy of
/// the principal allows it or the resource's policy allows it to this
/// principal; otherwise it is implicitly denied.
///
/// In `resource_policy` (a resource-based policy, or a role's trust policy
/// for `sts:AssumeRole`), a statement applies only to the principals its
/// `Principal` names (or its `NotPrincipal` does not). In identity-based
/// policies `Principal` is not looked at.
pub fn evaluate(
    identity_policies: &[&Policy],
    resource_policy: Option<&Policy>,
    req: &Request<'_>,
) -> Decision {
    let denied = identity_policies
        .iter()
        .any(|p| p.deny.iter().any(|s| s.applies(req, false)))
        || resource_policy.is_some_and(|p| p.deny.iter().any(|s| s.applies(req, true)));
    if denied {
        return Decision::ExplicitDeny;
    }
    let allowed = identity_policies
        .iter()
        .any(|p| p.allow.iter().any(|s| s.applies(req, false)))
        || resource_policy.is_some_and(|p| p.allow.iter().any(|s| s.applies(req, true)));
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

const ACTION: Compare = Compare {
    ignore_case: true,
    arn: false,
};
const RESOURCE: Compare = Compare {
    ignore_case: false,
    arn: true,
};

/// The values of a condition key (lower case): the context's, else those
/// that describe the principal.
fn lookup<'a>(req: &Request<'a>, key: &str) -> Option<Vals<'a>> {
    match req.context.get_lower(key) {
        Some(v) => Some(Vals::Many(v)),
        None => principal::principal_key(req.principal, key).map(Vals::One),
    }
}

impl Statement {
    fn applies(&self, req: &Request<'_>, in_resource_policy: bool) -> bool {
        let action = self
            .actions
            .iter()
            .any(|a| a.matches(req.action, &[], ACTION));
        if action == self.not_action {
            return false;
        }
        if in_resource_policy {
            match &self.principal {
                None => return false,
                Some((set, false)) if !set.matches(req.principal) => return false,
                Some((set, true)) if set.exempts(req.principal) => return false,
                Some(_) => {}
            }
        }
        // A variable that cannot be resolved makes the statement invalid.
        let resolved: Vec<&str>;
        let vars: &[&str] = if self.vars.is_empty() {
            &[]
        } else {
            let r: Option<Vec<&str>> = self
                .vars
                .iter()
                .map(|v| {
                    lookup(req, &v.key)
                        .and_then(Vals::single)
                        .or(v.default.as_deref())
                })
                .collect();
            match r {
                Some(r) => {
                    resolved = r;
                    &resolved
                }
                None => return false,
            }
        };
        if let Some((resources, not)) = &self.resources {
            let hit = resources
                .iter()
                .any(|r| r.matches(req.resource, vars, RESOURCE));
            if hit == *not {
                return false;
            }
        }
        self.conditions
            .iter()
            .all(|c| c.eval(lookup(req, &c.key), vars))
    }
}
