//! The error a policy document is refused with.

use std::fmt;

/// Why a policy document was refused. IAM answers every such refusal with
/// the error code [`PolicyError::CODE`] and a message; [`message`] is IAM's
/// wording, [`detail`] says what exactly was wrong (for logs and tests; IAM
/// itself often says no more than "Syntax errors in policy.").
///
/// [`message`]: PolicyError::message
/// [`detail`]: PolicyError::detail
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    message: String,
    detail: String,
}

impl PolicyError {
    /// The AWS error code of every refused policy document.
    pub const CODE: &'static str = "MalformedPolicyDocument";

    /// IAM's message, e.g. `Syntax errors in policy.`
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What exactly was wrong, e.g. `unknown field "Foo" in statement 1`.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    pub(crate) fn new(message: impl Into<String>, detail: impl Into<String>) -> Self {
        PolicyError {
            message: message.into(),
            detail: detail.into(),
        }
    }

    /// A message that says it all: the detail is the message.
    pub(crate) fn plain(message: impl Into<String>) -> Self {
        let message = message.into();
        PolicyError {
            detail: message.clone(),
            message,
        }
    }

    pub(crate) fn syntax(detail: impl Into<String>) -> Self {
        Self::new("Syntax errors in policy.", detail)
    }

    pub(crate) fn legacy(detail: impl Into<String>) -> Self {
        Self::new("The policy failed legacy parsing", detail)
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PolicyError {}
