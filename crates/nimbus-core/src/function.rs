//! A Lambda function as nimbus stores it, and the rules its settings obey.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{LambdaError, LambdaResult};
use crate::limits;

/// A point in time as nimbus records it (UTC).
pub type Timestamp = DateTime<Utc>;

/// The current time.
pub fn now() -> Timestamp {
    Utc::now()
}

/// A runtime identifier such as `python3.12`, `nodejs20.x` or
/// `provided.al2023`, parsed into the family nimbus knows how to run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RuntimeId {
    /// `python3.<minor>`
    Python { minor: u32 },
    /// `nodejs<major>.x`
    Node { major: u32 },
    /// `provided`, `provided.al2` or `provided.al2023`: the zip's `bootstrap`.
    Provided { flavour: ProvidedFlavour },
}

/// The OS generation named by a `provided*` runtime id; nimbus runs them all
/// on the host, but reports back the id the user chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProvidedFlavour {
    Al1,
    Al2,
    Al2023,
}

impl RuntimeId {
    /// The Lambda runtime families nimbus executes. Everything else in the
    /// Lambda runtime enum (java, dotnet, ruby, go1.x) is refused by name.
    pub fn parse(id: &str) -> LambdaResult<Self> {
        let unsupported = || {
            LambdaError::InvalidParameterValue(format!(
                "The runtime parameter of {id} is not supported by nimbus. \
                 Supported runtime families: pythonX.Y, nodejsN.x, provided, provided.al2, provided.al2023"
            ))
        };
        if let Some(minor) = id.strip_prefix("python3.") {
            let minor = minor.parse().map_err(|_| unsupported())?;
            return Ok(Self::Python { minor });
        }
        if let Some(major) = id.strip_prefix("nodejs").and_then(|r| r.strip_suffix(".x")) {
            let major = major.parse().map_err(|_| unsupported())?;
            return Ok(Self::Node { major });
        }
        let flavour = match id {
            "provided" => ProvidedFlavour::Al1,
            "provided.al2" => ProvidedFlavour::Al2,
            "provided.al2023" => ProvidedFlavour::Al2023,
            _ => return Err(unsupported()),
        };
        Ok(Self::Provided { flavour })
    }

    /// Whether a handler is imported from the code (python, node) rather than
    /// the zip's own `bootstrap` being run.
    pub fn is_managed(&self) -> bool {
        !matches!(self, Self::Provided { .. })
    }
}

impl std::fmt::Display for RuntimeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Python { minor } => write!(f, "python3.{minor}"),
            Self::Node { major } => write!(f, "nodejs{major}.x"),
            Self::Provided {
                flavour: ProvidedFlavour::Al1,
            } => f.write_str("provided"),
            Self::Provided {
                flavour: ProvidedFlavour::Al2,
            } => f.write_str("provided.al2"),
            Self::Provided {
                flavour: ProvidedFlavour::Al2023,
            } => f.write_str("provided.al2023"),
        }
    }
}

impl TryFrom<String> for RuntimeId {
    type Error = LambdaError;
    fn try_from(s: String) -> LambdaResult<Self> {
        Self::parse(&s)
    }
}

impl From<RuntimeId> for String {
    fn from(r: RuntimeId) -> String {
        r.to_string()
    }
}

/// `State` of a function, as the `FunctionActive` waiters poll it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FunctionState {
    Pending,
    Active,
    Inactive,
    Failed,
}

/// `LastUpdateStatus` of a function, as the `FunctionUpdated` waiters poll it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LastUpdateStatus {
    Successful,
    Failed,
    InProgress,
}

/// Everything nimbus stores about one function's `$LATEST`.
///
/// Serialisable because it is persisted by the store (a process boundary).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionSpec {
    pub name: String,
    pub runtime: RuntimeId,
    pub role: String,
    pub handler: String,
    pub description: String,
    pub timeout_s: u32,
    pub memory_mb: u32,
    pub ephemeral_storage_mb: u32,
    pub environment: BTreeMap<String, String>,
    pub architectures: Vec<String>,
    pub tags: BTreeMap<String, String>,
    /// Hex SHA-256 of the deployment package: its key in the blob store.
    pub code_sha256: String,
    /// Size of the zipped deployment package in bytes.
    pub code_size: u64,
    pub last_modified: Timestamp,
    pub revision_id: String,
    pub state: FunctionState,
    pub last_update_status: LastUpdateStatus,
    /// The function's resource-based policy, one entry per AddPermission.
    #[serde(default)]
    pub permissions: Vec<Permission>,
    /// `Some(n)` when this spec is published version `n`, a frozen copy
    /// of `$LATEST` (see [`FunctionSpec::snapshot`]); `None` for `$LATEST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// The published versions, oldest first (PublishVersion).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<FunctionSpec>,
    /// The highest version number ever published: numbers are not reused,
    /// even after a version is deleted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_version: u32,
    /// Aliases, ordered by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<Alias>,
    /// Reserved concurrency (PutFunctionConcurrency), across all versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_concurrency: Option<u32>,
    /// Provisioned concurrency configurations, one per version or alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provisioned: Vec<ProvisionedConcurrency>,
    /// `DeadLetterConfig.TargetArn`: where asynchronous events that failed
    /// for good go (an SQS queue ARN names a queue of nimbus's dead-letter
    /// store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_target: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The tag that sets a function's network (all its versions): `none` gives
/// its execution environments loopback only (the Runtime API and the nimbus
/// endpoint); `egress`, like no tag, lets them reach the network.
pub const NETWORK_TAG: &str = "nimbus:network";

/// Checks the tags nimbus itself reads.
pub fn validate_tags(tags: &BTreeMap<String, String>) -> crate::LambdaResult<()> {
    match tags.get(NETWORK_TAG).map(String::as_str) {
        None | Some("none" | "egress") => Ok(()),
        Some(other) => Err(crate::LambdaError::InvalidParameterValue(format!(
            "The tag {NETWORK_TAG} must be none or egress, not {other:?}."
        ))),
    }
}

/// Whether a function with these tags gets network egress.
pub fn egress_allowed(tags: &BTreeMap<String, String>) -> bool {
    tags.get(NETWORK_TAG).map(String::as_str) != Some("none")
}

impl FunctionSpec {
    /// Published version `n` of this `$LATEST`: the same code and
    /// configuration, frozen, with its own revision id and time. What
    /// belongs to the function as a whole (its versions, aliases,
    /// concurrency settings, policy and tags) stays with `$LATEST`.
    pub fn snapshot(
        &self,
        n: u32,
        description: Option<String>,
        revision_id: String,
        at: Timestamp,
    ) -> FunctionSpec {
        FunctionSpec {
            description: description.unwrap_or_else(|| self.description.clone()),
            last_modified: at,
            revision_id,
            tags: BTreeMap::new(),
            permissions: Vec::new(),
            version: Some(n),
            versions: Vec::new(),
            last_version: 0,
            aliases: Vec::new(),
            reserved_concurrency: None,
            provisioned: Vec::new(),
            ..self.clone()
        }
    }

    /// Whether `other` runs the same code with the same configuration
    /// (descriptions and times aside): PublishVersion publishes nothing new
    /// when `$LATEST` equals the last version.
    pub fn same_code_and_configuration(&self, other: &FunctionSpec) -> bool {
        self.code_sha256 == other.code_sha256
            && self.runtime == other.runtime
            && self.role == other.role
            && self.handler == other.handler
            && self.timeout_s == other.timeout_s
            && self.memory_mb == other.memory_mb
            && self.ephemeral_storage_mb == other.ephemeral_storage_mb
            && self.environment == other.environment
            && self.architectures == other.architectures
            && self.dead_letter_target == other.dead_letter_target
    }

    /// The version this spec is: `$LATEST` or its number.
    pub fn version_label(&self) -> String {
        self.version
            .map_or_else(|| "$LATEST".to_string(), |n| n.to_string())
    }

    /// A published version by number.
    pub fn published(&self, n: u32) -> Option<&FunctionSpec> {
        self.versions.iter().find(|v| v.version == Some(n))
    }

    /// An alias by name.
    pub fn alias(&self, name: &str) -> Option<&Alias> {
        self.aliases.iter().find(|a| a.name == name)
    }
}

/// An alias (CreateAlias): a name that points at a version, optionally
/// sending a share of invocations to a second one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alias {
    pub name: String,
    /// `$LATEST` or a version number.
    pub function_version: String,
    pub description: String,
    /// `RoutingConfig.AdditionalVersionWeights`: another published version
    /// and the share of invocations (0.0 to 1.0) it receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub additional_version: Option<(String, f64)>,
    pub revision_id: String,
}

/// A provisioned concurrency configuration
/// (PutProvisionedConcurrencyConfig): environments kept initialised for a
/// version, or for the version an alias points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionedConcurrency {
    /// A version number or an alias name, as the client gave it.
    pub qualifier: String,
    pub requested: u32,
    pub last_modified: Timestamp,
}

/// One statement of a function's resource-based policy (AddPermission).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub sid: String,
    /// `lambda:InvokeFunction`, `lambda:*`, ...
    pub action: String,
    /// A service (`s3.amazonaws.com`), an account id, or an IAM ARN.
    pub principal: String,
    pub source_arn: Option<String>,
    pub source_account: Option<String>,
}

/// The settings a client may give when creating or reconfiguring a function;
/// `None` keeps the current (or default) value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FunctionSettings {
    pub runtime: Option<String>,
    pub role: Option<String>,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub timeout_s: Option<i64>,
    pub memory_mb: Option<i64>,
    pub ephemeral_storage_mb: Option<i64>,
    pub environment: Option<BTreeMap<String, String>>,
    /// `DeadLetterConfig.TargetArn`; `Some("")` removes it.
    pub dead_letter_target: Option<String>,
}

/// Environment variables the Lambda runtime sets itself; a function may not
/// override them (the list AWS rejects with "reserved keys").
const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

impl FunctionSettings {
    /// Checks every present setting against Lambda's constraints, with the
    /// error codes and messages Lambda uses.
    pub fn validate(&self) -> LambdaResult<()> {
        if let Some(m) = self.memory_mb {
            range(
                "memorySize",
                m,
                limits::MEMORY_MIN_MB.into(),
                limits::MEMORY_MAX_MB.into(),
            )?;
        }
        if let Some(t) = self.timeout_s {
            range(
                "timeout",
                t,
                limits::TIMEOUT_MIN_S.into(),
                limits::TIMEOUT_MAX_S.into(),
            )?;
        }
        if let Some(e) = self.ephemeral_storage_mb {
            range(
                "ephemeralStorage.size",
                e,
                limits::EPHEMERAL_MIN_MB.into(),
                limits::EPHEMERAL_MAX_MB.into(),
            )?;
        }
        if let Some(d) = &self.description
            && d.chars().count() > 256
        {
            return Err(LambdaError::Validation(format!(
                "1 validation error detected: Value '{d}' at 'description' failed to satisfy constraint: \
                 Member must have length less than or equal to 256"
            )));
        }
        if let Some(h) = &self.handler
            && (h.len() > 128 || h.chars().any(char::is_whitespace))
        {
            return Err(LambdaError::Validation(format!(
                "1 validation error detected: Value '{h}' at 'handler' failed to satisfy constraint: \
                 Member must satisfy regular expression pattern: [^\\s]+"
            )));
        }
        if let Some(r) = &self.role {
            validate_role(r)?;
        }
        if let Some(r) = &self.runtime {
            RuntimeId::parse(r)?;
        }
        if let Some(env) = &self.environment {
            validate_environment(env)?;
        }
        Ok(())
    }
}

fn range(field: &str, value: i64, min: i64, max: i64) -> LambdaResult<()> {
    let bound = if value < min {
        format!("greater than or equal to {min}")
    } else if value > max {
        format!("less than or equal to {max}")
    } else {
        return Ok(());
    };
    Err(LambdaError::Validation(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: \
         Member must have value {bound}"
    )))
}

fn validate_role(role: &str) -> LambdaResult<()> {
    let ok = role
        .strip_prefix("arn:aws:iam::")
        .and_then(|r| r.split_once(":role/"))
        .is_some_and(|(account, name)| {
            account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+=,.@-_/".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(LambdaError::Validation(format!(
            "1 validation error detected: Value '{role}' at 'role' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\\d{{12}}:role/?[a-zA-Z_0-9+=,.@\\-_/]+"
        )))
    }
}

fn validate_environment(env: &BTreeMap<String, String>) -> LambdaResult<()> {
    for key in env.keys() {
        let mut chars = key.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && key.len() >= 2;
        if !valid {
            return Err(LambdaError::Validation(format!(
                "1 validation error detected: Value at 'environment.variables' failed to satisfy constraint: \
                 Map keys must satisfy constraint: [Member must satisfy regular expression pattern: \
                 [a-zA-Z]([a-zA-Z0-9_])+] (key: '{key}')"
            )));
        }
    }
    let reserved: Vec<&str> = env
        .keys()
        .map(String::as_str)
        .filter(|k| RESERVED_ENV.contains(k))
        .collect();
    if !reserved.is_empty() {
        return Err(LambdaError::InvalidParameterValue(format!(
            "Lambda was unable to configure your environment variables because the environment variables \
             you have provided contains reserved keys that are currently not supported for modification. \
             Reserved keys used in this request: {}",
            reserved.join(",")
        )));
    }
    // AWS measures the variables as their JSON serialisation.
    let size: usize = 2 + env
        .iter()
        .map(|(k, v)| k.len() + v.len() + 6)
        .sum::<usize>()
        - usize::from(!env.is_empty());
    if size > limits::ENV_VARS_MAX {
        return Err(LambdaError::InvalidParameterValue(format!(
            "Lambda was unable to configure your environment variables because the environment variables \
             you have provided exceeded the 4KB limit. String measured: {size} bytes"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: FunctionSettings) -> &'static str {
        s.validate().unwrap_err().code()
    }

    #[test]
    fn runtime_ids_round_trip() {
        for id in [
            "python3.12",
            "python3.9",
            "nodejs20.x",
            "provided",
            "provided.al2",
            "provided.al2023",
        ] {
            assert_eq!(RuntimeId::parse(id).unwrap().to_string(), id);
        }
        for id in ["java21", "python2.7", "nodejs", "go1.x", "rust"] {
            assert_eq!(
                RuntimeId::parse(id).unwrap_err().code(),
                "InvalidParameterValueException"
            );
        }
    }

    #[test]
    fn limits_are_enforced_with_aws_codes() {
        let s = |f: fn(&mut FunctionSettings)| {
            let mut s = FunctionSettings::default();
            f(&mut s);
            s
        };
        assert!(s(|s| s.memory_mb = Some(128)).validate().is_ok());
        assert!(s(|s| s.memory_mb = Some(10240)).validate().is_ok());
        assert_eq!(code(s(|s| s.memory_mb = Some(127))), "ValidationException");
        assert_eq!(
            code(s(|s| s.memory_mb = Some(10241))),
            "ValidationException"
        );
        assert_eq!(code(s(|s| s.timeout_s = Some(0))), "ValidationException");
        assert_eq!(code(s(|s| s.timeout_s = Some(901))), "ValidationException");
        assert!(s(|s| s.timeout_s = Some(900)).validate().is_ok());
        assert_eq!(
            code(s(|s| s.role = Some("admin".into()))),
            "ValidationException"
        );
        assert!(
            s(|s| s.role = Some("arn:aws:iam::000000000000:role/service-role/x".into()))
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn environment_is_checked_for_names_reserved_keys_and_size() {
        let env = |pairs: &[(&str, String)]| FunctionSettings {
            environment: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
            ..Default::default()
        };
        assert!(env(&[("STAGE", "dev".into())]).validate().is_ok());
        assert_eq!(code(env(&[("1BAD", "x".into())])), "ValidationException");
        assert_eq!(
            code(env(&[("AWS_REGION", "x".into())])),
            "InvalidParameterValueException"
        );
        // {"BIG":"<v>"} is 10 bytes of JSON around the value.
        assert!(env(&[("BIG", "x".repeat(4096 - 10))]).validate().is_ok());
        assert_eq!(
            code(env(&[("BIG", "x".repeat(4096 - 9))])),
            "InvalidParameterValueException"
        );
    }
}
