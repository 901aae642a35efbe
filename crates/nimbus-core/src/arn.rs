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

    /// `arn:aws:lambda:<region>:<account>:function:<name>:<qualifier>`: the
    /// ARN of a version or an alias.
    pub fn qualified_arn(&self, name: &str, qualifier: &str) -> String {
        format!("{}:{qualifier}", self.function_arn(name))
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

impl FunctionRef {
    /// The qualifier, parsed; `None` when the client gave none.
    pub fn parsed_qualifier(&self) -> LambdaResult<Option<Qualifier>> {
        self.qualifier.as_deref().map(Qualifier::parse).transpose()
    }
}

/// What a qualifier names: `$LATEST`, a published version or an alias.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Qualifier {
    Latest,
    Version(u32),
    Alias(String),
}

impl Qualifier {
    /// Parses a qualifier as Lambda's `Qualifier` shapes describe it: all
    /// digits is a version number, `$LATEST` is itself, anything else of
    /// `[a-zA-Z0-9-_]` (at most 128 characters) is an alias name.
    pub fn parse(q: &str) -> LambdaResult<Self> {
        if q == "$LATEST" {
            return Ok(Self::Latest);
        }
        let invalid = || {
            LambdaError::Validation(format!(
                "1 validation error detected: Value '{q}' at 'qualifier' failed to satisfy constraint: \
                 Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)"
            ))
        };
        if q.is_empty() || q.len() > 128 {
            return Err(invalid());
        }
        if q.bytes().all(|b| b.is_ascii_digit()) {
            // A number too large to be a version names none.
            return Ok(Self::Version(q.parse().unwrap_or(u32::MAX)));
        }
        if q.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            Ok(Self::Alias(q.to_string()))
        } else {
            Err(invalid())
        }
    }
}

impl std::fmt::Display for Qualifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Latest => f.write_str("$LATEST"),
            Self::Version(n) => write!(f, "{n}"),
            Self::Alias(a) => f.write_str(a),
        }
    }
}

/// Checks an alias name (CreateAlias `Name`): 1 to 128 of `[a-zA-Z0-9-_]`,
/// not all digits (that would read as a version).
pub fn validate_alias_name(name: &str) -> LambdaResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !name.bytes().all(|b| b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(LambdaError::Validation(format!(
            "1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)"
        )))
    }
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
    fn qualifiers_are_latest_versions_or_aliases() {
        assert_eq!(Qualifier::parse("$LATEST").unwrap(), Qualifier::Latest);
        assert_eq!(Qualifier::parse("12").unwrap(), Qualifier::Version(12));
        assert_eq!(
            Qualifier::parse("prod-2").unwrap(),
            Qualifier::Alias("prod-2".into())
        );
        for bad in ["", "a b", "$LATEST2", "x:y", &"a".repeat(129)] {
            assert_eq!(
                Qualifier::parse(bad).unwrap_err().code(),
                "ValidationException",
                "{bad}"
            );
        }
        assert!(validate_alias_name("live").is_ok());
        assert!(validate_alias_name("123").is_err());
        assert!(validate_alias_name("$LATEST").is_err());
    }

    #[test]
    fn builds_aws_shaped_arns() {
        assert_eq!(
            Identity::default().function_arn("demo-function"),
            "arn:aws:lambda:us-east-1:000000000000:function:demo-function"
        );
    }
}
