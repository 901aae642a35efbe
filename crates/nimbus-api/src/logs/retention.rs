//! PutRetentionPolicy and DeleteRetentionPolicy. The store keeps the
//! setting; `nimbus_lambda::spawn_retention_sweeper` deletes what it no
//! longer keeps.

use nimbus_store::Store;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{LogsError, db};

/// The values CloudWatch Logs accepts for `retentionInDays`.
pub(super) const RETENTION_DAYS: [u32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PutArgs {
    log_group_name: String,
    retention_in_days: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeleteArgs {
    log_group_name: String,
}

/// CloudWatch's validation message for a value outside the set.
fn invalid(value: Option<i64>) -> LogsError {
    let message = match value {
        None => "1 validation error detected: Value null at 'retentionInDays' failed to satisfy constraint: Member must not be null".to_string(),
        Some(v) => {
            let set: Vec<String> = RETENTION_DAYS.iter().map(u32::to_string).collect();
            format!(
                "1 validation error detected: Value '{v}' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                set.join(", ")
            )
        }
    };
    LogsError::user("InvalidParameterException", message)
}

pub(super) fn put(store: &dyn Store, a: PutArgs) -> Result<Value, LogsError> {
    // Parameters are validated before the group is looked up, as AWS does.
    let days = a
        .retention_in_days
        .and_then(|d| u32::try_from(d).ok())
        .filter(|d| RETENTION_DAYS.contains(d))
        .ok_or_else(|| invalid(a.retention_in_days))?;
    if db(store.put_log_retention(&a.log_group_name, Some(days)))? {
        Ok(json!({}))
    } else {
        Err(LogsError::no_group())
    }
}

pub(super) fn delete(store: &dyn Store, a: DeleteArgs) -> Result<Value, LogsError> {
    if db(store.put_log_retention(&a.log_group_name, None))? {
        Ok(json!({}))
    } else {
        Err(LogsError::no_group())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_store::SqliteStore;

    fn put_days(store: &dyn Store, group: &str, days: Option<i64>) -> Result<Value, LogsError> {
        put(
            store,
            PutArgs {
                log_group_name: group.into(),
                retention_in_days: days,
            },
        )
    }

    #[test]
    fn only_cloudwatch_values_are_accepted() {
        let store = SqliteStore::in_memory().unwrap();
        store.create_log_group("g", 0).unwrap();
        for d in RETENTION_DAYS {
            assert!(put_days(&store, "g", Some(i64::from(d))).is_ok(), "{d}");
        }
        for d in [0, 2, 4, 366, 3654, -1, i64::from(u32::MAX) + 1] {
            let e = put_days(&store, "g", Some(d)).unwrap_err();
            assert_eq!(e.code, "InvalidParameterException");
            assert!(
                e.message.starts_with(&format!(
                    "1 validation error detected: Value '{d}' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: [1, 3, 5, 7, 14, 30,"
                )),
                "{}",
                e.message
            );
            assert!(e.message.ends_with(", 3288, 3653]"), "{}", e.message);
        }
        let e = put_days(&store, "g", None).unwrap_err();
        assert!(e.message.contains("Value null"), "{}", e.message);
    }

    #[test]
    fn a_missing_group_is_not_found_after_validation() {
        let store = SqliteStore::in_memory().unwrap();
        let e = put_days(&store, "nope", Some(2)).unwrap_err();
        assert_eq!(e.code, "InvalidParameterException");
        let e = put_days(&store, "nope", Some(3)).unwrap_err();
        assert_eq!(e.code, "ResourceNotFoundException");
        let e = delete(
            &store,
            DeleteArgs {
                log_group_name: "nope".into(),
            },
        )
        .unwrap_err();
        assert_eq!(e.code, "ResourceNotFoundException");
    }
}
