//! Region, account and the ARNs and function references built from them.

use crate::error::{LambdaError, LambdaResult};

/// Where this nimbus pretends to be: the region and account that appear in
/// every ARN it issues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub region: String,
    pub account_id: String,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        }
    }
}

impl Identity {
    /// `arn:aws:lambda:<region>:<account>:function:<name>`.
    pub fn function_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:lambda:{}:{}:function:{name}",
            self.region, self.account_id
        )
    }

    /// Parses the `FunctionName` path parameter of the Lambda API: a name,
    /// a partial ARN (`123456789012:function:name`) or a full ARN, each with
    /// an optional `:qualifier`; an explicit `Qualifier` query parameter must
    /// agree with one in the name.
    pub fn parse_function_ref(
        &self,
        raw: &str,
        qualifier: Option<&str>,
    ) -> LambdaResult<FunctionRef> {
        let parts: Vec<&str> = raw.split(':').collect();
        let (name, inline_qualifier) = match parts.as_slice() {
            [name] => (*name, None),
            [name, q] => (*name, Some(*q)),
            [account, "function", name] => {
                self.check_account(account, raw)?;
                (*name, None)
            }
            [account, "function", name, q] => {
                self.check_account(account, raw)?;
                (*name, Some(*q))
            }
            [
                "arn",
                partition,
                "lambda",
                region,
                account,
                "function",
                name,
                rest @ ..,
            ] if rest.len() <= 1 && partition.starts_with("aws") => {
                if *region != self.region {
                    return Err(LambdaError::ResourceNotFound(format!(
                        "Functions from '{region}' are not reachable in this region ('{}')",
                        self.region
                    )));
                }
                self.check_account(account, raw)?;
                (*name, rest.first().copied())
            }
            _ => return Err(invalid_name(raw)),
        };
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid_name(raw));
        }
        let qualifier = match (inline_qualifier, qualifier) {
            (Some(a), Some(b)) if a != b => {
                return Err(LambdaError::InvalidParameterValue(
                    "The derived qualifier from the function name does not match the specified qualifier."
                        .into(),
                ));
            }
            (Some(q), _) | (None, Some(q)) => Some(q.to_string()),
            (None, None) => None,
        };
        Ok(FunctionRef {
            name: name.to_string(),
            qualifier,
        })
    }

    fn check_account(&self, account: &str, raw: &str) -> LambdaResult<()> {
        if account == self.account_id {
            Ok(())
        } else if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) {
            Err(LambdaError::ResourceNotFound(format!(
                "Function not found: {raw} (account {account} is not this nimbus's account {})",
                self.account_id
            )))
        } else {
            Err(invalid_name(raw))
        }
    }
}

fn invalid_name(raw: &str) -> LambdaError {
    LambdaError::Validation(format!(
        "1 validation error detected: Value '{raw}' at 'functionName' failed to satisfy constraint: \
         Member must satisfy regular expression pattern: \
         (arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{{2}}(-gov)?-[a-z]+-\\d{{1}}:)?(\\d{{12}}:)?(function:)?([a-zA-Z0-9-_\\.]+)(:(\\$LATEST|[a-zA-Z0-9-_]+))?"
    ))
}

/// A function named by a client, with the version or alias it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRef {
    pub name: String,
    pub qualifier: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str, q: Option<&str>) -> LambdaResult<FunctionRef> {
        Identity::default().parse_function_ref(raw, q)
    }

    #[test]
    fn accepts_every_form_of_function_name() {
        let plain = FunctionRef {
            name: "demo-function".into(),
            qualifier: None,
        };
        assert_eq!(parse("demo-function", None).unwrap(), plain);
        assert_eq!(
            parse("000000000000:function:demo-function", None).unwrap(),
            plain
        );
        assert_eq!(
            parse(
                "arn:aws:lambda:us-east-1:000000000000:function:demo-function",
                None
            )
            .unwrap(),
            plain
        );
        let latest = FunctionRef {
            name: "f".into(),
            qualifier: Some("$LATEST".into()),
        };
        assert_eq!(parse("f:$LATEST", None).unwrap(), latest);
        assert_eq!(
            parse(
                "arn:aws:lambda:us-east-1:000000000000:function:f:$LATEST",
                None
            )
            .unwrap(),
            latest
        );
        assert_eq!(parse("f", Some("$LATEST")).unwrap(), latest);
    }

    #[test]
    fn rejects_bad_names_and_foreign_arns() {
        assert_eq!(
            parse("bad name", None).unwrap_err().code(),
            "ValidationException"
        );
        assert_eq!(parse("", None).unwrap_err().code(), "ValidationException");
        assert_eq!(
            parse("arn:aws:lambda:eu-west-1:000000000000:function:f", None)
                .unwrap_err()
                .code(),
            "ResourceNotFoundException"
        );
        assert_eq!(
            parse("123456789012:function:f", None).unwrap_err().code(),
            "ResourceNotFoundException"
        );
        assert_eq!(
            parse("f:1", Some("2")).unwrap_err().code(),
            "InvalidParameterValueException"
        );
    }

    #[test]
    fn builds_aws_shaped_arns() {
        assert_eq!(
            Identity::default().function_arn("demo-function"),
            "arn:aws:lambda:us-east-1:000000000000:function:demo-function"
        );
    }
}
