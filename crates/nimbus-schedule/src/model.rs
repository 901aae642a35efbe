//! Schedules, rules and their targets as nimbus keeps them. They derive
//! serde because the store persists them as JSON documents, not because
//! they are a wire format (that is `nimbus-api`'s).

use serde::{Deserialize, Serialize};

/// The only schedule group and event bus nimbus has.
pub const DEFAULT_GROUP: &str = "default";

/// Errors of the schedule operations; the API maps each to its service's
/// error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Bad input (`ValidationException`).
    #[error("{0}")]
    Validation(String),
    /// No such schedule, group or rule (`ResourceNotFoundException`).
    #[error("{0}")]
    NotFound(String),
    /// The name is taken (`ConflictException`).
    #[error("{0}")]
    Conflict(String),
    /// The store failed; the detail is logged, not sent.
    #[error("{0}")]
    Internal(String),
}

impl From<rusqlite::Error> for ScheduleError {
    fn from(e: rusqlite::Error) -> Self {
        ScheduleError::Internal(format!("schedule store: {e}"))
    }
}

pub type ScheduleResult<T> = Result<T, ScheduleError>;

/// How long and how often a failed hand-off is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// 0-185; AWS's default is 185.
    pub maximum_retry_attempts: u32,
    /// 60-86400 seconds; AWS's default is 86400. Also bounds how old a
    /// missed tick may be and still fire after downtime.
    pub maximum_event_age_s: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            maximum_retry_attempts: 185,
            maximum_event_age_s: 86_400,
        }
    }
}

/// Where a schedule or rule delivers: a Lambda function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The rule target's `Id` (empty for a schedule's single target).
    #[serde(default)]
    pub id: String,
    /// The function's ARN (optionally qualified).
    pub arn: String,
    pub role_arn: Option<String>,
    /// Sent to the function as is; without it a schedule sends `{}` and a
    /// rule the `Scheduled Event` envelope.
    pub input: Option<String>,
    /// `None` for a rule target that did not set one (shown as absent).
    pub retry_policy: Option<RetryPolicy>,
    /// An SQS queue ARN (nimbus's dead-letter store).
    pub dead_letter_arn: Option<String>,
}

impl Target {
    pub fn retry(&self) -> RetryPolicy {
        self.retry_policy.unwrap_or_default()
    }
}

/// An EventBridge Scheduler schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub group: String,
    pub name: String,
    pub description: Option<String>,
    pub expression: String,
    pub timezone: Option<String>,
    /// Epoch milliseconds.
    pub start_date_ms: Option<i64>,
    pub end_date_ms: Option<i64>,
    pub enabled: bool,
    /// `FLEXIBLE` mode's MaximumWindowInMinutes; `None` is `OFF`.
    pub flexible_window_min: Option<u32>,
    pub target: Target,
    /// ActionAfterCompletion `DELETE`: a one-time schedule deletes itself
    /// once it has fired.
    pub delete_after_completion: bool,
    pub kms_key_arn: Option<String>,
    pub created_ms: i64,
    pub modified_ms: i64,
    /// Where a rate counts from (StartDate, else the last change of the
    /// expression).
    pub anchor_ms: i64,
}

/// An EventBridge rule on the default bus (schedule rules only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub name: String,
    pub description: Option<String>,
    pub expression: String,
    pub enabled: bool,
    pub role_arn: Option<String>,
    pub targets: Vec<Target>,
    pub created_ms: i64,
    pub anchor_ms: i64,
}

/// Which kind of source fires a function, for `nimbus trigger list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerKind {
    /// An EventBridge Scheduler schedule.
    Schedule,
    /// An EventBridge rule.
    Rule,
}

/// A schedule or rule that targets a given function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub kind: TriggerKind,
    /// The schedule's or rule's ARN.
    pub arn: String,
    pub name: String,
    pub expression: String,
    pub enabled: bool,
    /// The target's ARN as configured (it may carry a qualifier).
    pub target_arn: String,
}
