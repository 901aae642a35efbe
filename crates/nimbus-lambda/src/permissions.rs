//! A function's resource-based policy: AddPermission, GetPolicy,
//! RemovePermission, and the policy document IAM evaluates.

use nimbus_core::function::Permission;
use nimbus_core::{FunctionRef, LambdaError, LambdaResult};
use serde_json::{Value, json};

use crate::LambdaService;

fn statement(function_arn: &str, p: &Permission) -> Value {
    let principal = if p.principal == "*" {
        json!("*")
    } else if p.principal.ends_with(".amazonaws.com") {
        json!({"Service": p.principal})
    } else if p.principal.len() == 12 && p.principal.bytes().all(|b| b.is_ascii_digit()) {
        json!({"AWS": format!("arn:aws:iam::{}:root", p.principal)})
    } else {
        json!({"AWS": p.principal})
    };
    let mut st = json!({
        "Sid": p.sid,
        "Effect": "Allow",
        "Principal": principal,
        "Action": p.action,
        "Resource": function_arn,
    });
    let mut condition = serde_json::Map::new();
    if let Some(arn) = &p.source_arn {
        condition.insert("ArnLike".into(), json!({"AWS:SourceArn": arn}));
    }
    if let Some(account) = &p.source_account {
        condition.insert("StringEquals".into(), json!({"AWS:SourceAccount": account}));
    }
    if !condition.is_empty() {
        st["Condition"] = Value::Object(condition);
    }
    st
}

fn validate(p: &Permission) -> LambdaResult<()> {
    let sid_ok = !p.sid.is_empty()
        && p.sid.len() <= 100
        && p.sid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !sid_ok {
        return Err(LambdaError::Validation(format!(
            "1 validation error detected: Value '{}' at 'statementId' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: ([a-zA-Z0-9-_.]+)",
            p.sid
        )));
    }
    let action = p.action.to_ascii_lowercase();
    if !(action.starts_with("lambda:") || action == "*") {
        return Err(LambdaError::Validation(format!(
            "1 validation error detected: Value '{}' at 'action' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: (lambda:[*]|lambda:[a-zA-Z]+|[*])",
            p.action
        )));
    }
    if p.principal.is_empty() || p.principal.chars().any(char::is_whitespace) {
        return Err(LambdaError::InvalidParameterValue(format!(
            "The provided principal was invalid. Please check the principal and try again: {}",
            p.principal
        )));
    }
    Ok(())
}

impl LambdaService {
    /// The function whose policy a request names: the policy is the
    /// function's; versions and aliases have none of their own yet.
    fn no_qualifier(&self, f: &FunctionRef) -> LambdaResult<FunctionRef> {
        match f.qualifier.as_deref() {
            None | Some("$LATEST") => Ok(FunctionRef {
                name: f.name.clone(),
                qualifier: None,
            }),
            Some(q) => {
                self.resolve(f)?;
                Err(LambdaError::InvalidParameterValue(format!(
                    "Resource-based policies of versions and aliases are not supported by nimbus yet; \
                     to let others invoke {}, grant lambda:InvokeFunction on it in their identity policies",
                    self.identity.qualified_arn(&f.name, q)
                )))
            }
        }
    }
}

impl LambdaService {
    /// AddPermission: adds a statement; returns it as JSON text.
    pub fn add_permission(
        &self,
        f: &FunctionRef,
        p: Permission,
        revision_id: Option<&str>,
    ) -> LambdaResult<String> {
        validate(&p)?;
        let f = self.no_qualifier(f)?;
        let _w = self.write_guard();
        let mut spec = self.live(&f)?.spec.clone();
        Self::check_revision(&spec, revision_id)?;
        if spec.permissions.iter().any(|q| q.sid == p.sid) {
            return Err(LambdaError::ResourceConflict(
                "The statement id (sid) provided already exists. Please specify a new sid, or remove the existing statement."
                    .into(),
            ));
        }
        let text = statement(&self.identity.function_arn(&spec.name), &p).to_string();
        spec.permissions.push(p);
        self.store
            .update_function(&spec)
            .map_err(LambdaError::internal)?;
        // The code and configuration are unchanged: warm environments stay.
        self.publish_live(spec);
        Ok(text)
    }

    /// GetPolicy: the resource-based policy and the function's revision.
    pub fn function_policy(&self, f: &FunctionRef) -> LambdaResult<(String, String)> {
        let f = self.no_qualifier(f)?;
        let live = self.live(&f)?;
        self.policy_document(&live.spec.name)
            .map(|doc| (doc, live.spec.revision_id.clone()))
            .ok_or_else(|| {
                LambdaError::ResourceNotFound("The resource you requested does not exist.".into())
            })
    }

    /// RemovePermission.
    pub fn remove_permission(
        &self,
        f: &FunctionRef,
        sid: &str,
        revision_id: Option<&str>,
    ) -> LambdaResult<()> {
        let f = self.no_qualifier(f)?;
        let _w = self.write_guard();
        let mut spec = self.live(&f)?.spec.clone();
        Self::check_revision(&spec, revision_id)?;
        let before = spec.permissions.len();
        spec.permissions.retain(|p| p.sid != sid);
        if spec.permissions.len() == before {
            return Err(LambdaError::ResourceNotFound(format!(
                "Statement {sid} is not found in resource policy."
            )));
        }
        self.store
            .update_function(&spec)
            .map_err(LambdaError::internal)?;
        self.publish_live(spec);
        Ok(())
    }

    /// The resource-based policy of a function as an IAM policy document,
    /// `None` when it has no statements (or does not exist).
    pub fn policy_document(&self, function_name: &str) -> Option<String> {
        let live = self
            .live(&FunctionRef {
                name: function_name.into(),
                qualifier: None,
            })
            .ok()?;
        if live.spec.permissions.is_empty() {
            return None;
        }
        let arn = self.identity.function_arn(function_name);
        Some(document(&arn, &live.spec.permissions))
    }
}

/// The policy document of these statements.
pub(crate) fn document(function_arn: &str, permissions: &[Permission]) -> String {
    let statements: Vec<Value> = permissions
        .iter()
        .map(|p| statement(function_arn, p))
        .collect();
    json!({"Version": "2012-10-17", "Id": "default", "Statement": statements}).to_string()
}
