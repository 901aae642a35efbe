//! Durable state for nimbus.
//!
//! - [`Store`]: the metadata store (functions, log groups, streams and
//!   events), one trait with the embedded SQLite backend [`SqliteStore`];
//!   every backend passes [`store_test_suite`].
//! - [`BlobStore`]: content-addressed files (deployment packages) under the
//!   data directory, written atomically and named by their SHA-256.
//! - [`unpack_zip`]: turns a deployment package into a code directory,
//!   refusing entries that escape it, links that point out and zip bombs.
//!
//! Everything a caller is told was stored is on disk (fsynced) first.

mod blobs;
mod queue;
mod retention;
mod sqlite;
mod unzip;
mod usage;

use nimbus_core::FunctionSpec;

pub use blobs::BlobStore;
pub use queue::{DeadLetter, QueuedEvent};
pub use sqlite::SqliteStore;
pub use unzip::{UnzipError, UnzipLimits, unpack_zip};
pub use usage::{MB_MS_PER_GB_SECOND, UsageHour};

/// An error of the storage layer; its detail is for the server log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("i/o on {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("corrupt record {key}: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
}

/// Result of a storage operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// One log line as stored: its event time and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    pub timestamp_ms: i64,
    pub ingestion_ms: i64,
    pub message: String,
}

/// Events to append to one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAppend {
    pub group: String,
    pub stream: String,
    pub events: Vec<LogEvent>,
}

/// A log stream's summary, as DescribeLogStreams reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogStreamInfo {
    pub name: String,
    pub created_ms: i64,
    pub first_event_ms: Option<i64>,
    pub last_event_ms: Option<i64>,
    pub last_ingestion_ms: Option<i64>,
    pub stored_bytes: i64,
}

/// A log group's summary, as DescribeLogGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogGroupInfo {
    pub name: String,
    pub created_ms: i64,
    pub stored_bytes: i64,
    /// `retentionInDays`; `None` keeps events forever.
    pub retention_days: Option<u32>,
}

/// A query over one group's events (GetLogEvents / FilterLogEvents).
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub group: String,
    /// Only these streams; all of the group's when empty.
    pub streams: Vec<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// Only events whose message contains this text.
    pub contains: Option<String>,
    /// Resume after this event sequence number (exclusive).
    pub after_seq: Option<i64>,
    /// Read newest first.
    pub newest_first: bool,
    pub limit: usize,
}

/// A stored event with its stream and its position in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLogEvent {
    pub seq: i64,
    pub stream: String,
    pub event: LogEvent,
}

/// The metadata store. Methods are synchronous and short; async callers on a
/// hot path hand batches to a background thread instead.
pub trait Store: Send + Sync + 'static {
    /// Inserts a new function; `false` if one with that name exists.
    fn create_function(&self, spec: &FunctionSpec) -> StoreResult<bool>;
    /// Replaces an existing function's record.
    fn update_function(&self, spec: &FunctionSpec) -> StoreResult<()>;
    fn get_function(&self, name: &str) -> StoreResult<Option<FunctionSpec>>;
    /// All functions, ordered by name.
    fn list_functions(&self) -> StoreResult<Vec<FunctionSpec>>;
    /// Removes a function; `false` if there was none.
    fn delete_function(&self, name: &str) -> StoreResult<bool>;

    /// A value of the server's own settings (keys, secrets).
    fn get_setting(&self, key: &str) -> StoreResult<Option<String>>;
    fn put_setting(&self, key: &str, value: &str) -> StoreResult<()>;

    /// Creates the group if needed; `false` if it existed.
    fn create_log_group(&self, group: &str, now_ms: i64) -> StoreResult<bool>;
    /// Creates the stream (and its group) if needed; `false` if it existed.
    fn create_log_stream(&self, group: &str, stream: &str, now_ms: i64) -> StoreResult<bool>;
    /// Appends events to streams, creating groups and streams as needed, in
    /// one transaction (the log writer batches whatever has queued up).
    fn append_log_events(&self, batches: &[LogAppend]) -> StoreResult<()>;
    fn list_log_groups(&self, prefix: Option<&str>) -> StoreResult<Vec<LogGroupInfo>>;
    /// `None` if the group does not exist.
    fn list_log_streams(
        &self,
        group: &str,
        prefix: Option<&str>,
    ) -> StoreResult<Option<Vec<LogStreamInfo>>>;
    fn query_log_events(&self, query: &LogQuery) -> StoreResult<Vec<StoredLogEvent>>;
    fn delete_log_group(&self, group: &str) -> StoreResult<bool>;
    /// Sets (`Some(days)`) or removes (`None`) a group's retention; `false`
    /// if the group does not exist.
    fn put_log_retention(&self, group: &str, days: Option<u32>) -> StoreResult<bool>;
    /// Deletes the events older than their group's retention as of
    /// `now_ms` and updates the streams' stored bytes; returns how many.
    fn expire_log_events(&self, now_ms: i64) -> StoreResult<u64>;

    /// Adds increments to the hourly usage rollups: an upsert per
    /// (function, hour), all in one transaction.
    fn record_usage(&self, rows: &[UsageHour]) -> StoreResult<()>;
    /// The rollups of hours starting at or after `since_s` (epoch seconds),
    /// of one function or all, ordered by hour, then function.
    fn usage_since(&self, since_s: i64, function: Option<&str>) -> StoreResult<Vec<UsageHour>>;

    /// A JSON document of a service's own state (IAM users, roles,
    /// policies, access keys), by namespace and key.
    fn get_doc(&self, ns: &str, key: &str) -> StoreResult<Option<String>>;
    /// Writes (creates or replaces) a document.
    fn put_doc(&self, ns: &str, key: &str, doc: &str) -> StoreResult<()>;
    /// Removes a document; `false` if there was none.
    fn delete_doc(&self, ns: &str, key: &str) -> StoreResult<bool>;
    /// Every document of a namespace as (key, doc), ordered by key.
    fn list_docs(&self, ns: &str) -> StoreResult<Vec<(String, String)>>;

    /// Queues asynchronous invocations (an id already queued is left as
    /// it is); durable when this returns.
    fn enqueue_events(&self, events: &[QueuedEvent]) -> StoreResult<()>;
    /// Every queued event, oldest first.
    fn queued_events(&self) -> StoreResult<Vec<QueuedEvent>>;
    /// Records an attempt's outcome: the attempts so far, when to try
    /// again and why the last attempt failed.
    fn reschedule_event(
        &self,
        id: &str,
        attempts: u32,
        next_ms: i64,
        last_error: Option<&str>,
    ) -> StoreResult<()>;
    /// Removes finished events and stores dead letters, in one transaction.
    fn finish_events(&self, done: &[String], dead: &[DeadLetter]) -> StoreResult<()>;
    /// Dead letters of one queue or all, oldest first.
    fn dead_letters(&self, queue: Option<&str>) -> StoreResult<Vec<DeadLetter>>;
    /// Moves dead letters (unknown ids are skipped) back into the queue as
    /// the events `make` builds; returns those events.
    fn replay_dead_letters(
        &self,
        ids: &[i64],
        make: &dyn Fn(&DeadLetter) -> QueuedEvent,
    ) -> StoreResult<Vec<QueuedEvent>>;
}

/// The behaviour every [`Store`] backend must have; each backend's tests call
/// this with a fresh, empty store.
pub fn store_test_suite(store: &dyn Store) {
    use nimbus_core::{FunctionState, LastUpdateStatus, RuntimeId};

    let now = nimbus_core::function::now();
    let spec = |name: &str| FunctionSpec {
        name: name.into(),
        runtime: RuntimeId::parse("python3.11").unwrap(),
        role: "arn:aws:iam::000000000000:role/r".into(),
        handler: "lambda_function.lambda_handler".into(),
        description: String::new(),
        timeout_s: 3,
        memory_mb: 128,
        ephemeral_storage_mb: 512,
        environment: [("A".to_string(), "1".to_string())].into(),
        architectures: vec!["x86_64".into()],
        tags: Default::default(),
        code_sha256: "00".repeat(32),
        code_size: 10,
        last_modified: now,
        revision_id: "r1".into(),
        state: FunctionState::Active,
        last_update_status: LastUpdateStatus::Successful,
        permissions: Vec::new(),
        version: None,
        versions: Vec::new(),
        last_version: 0,
        aliases: Vec::new(),
        reserved_concurrency: None,
        provisioned: Vec::new(),
        dead_letter_target: None,
    };
    assert!(store.list_functions().unwrap().is_empty());
    assert!(store.create_function(&spec("b")).unwrap());
    assert!(store.create_function(&spec("a")).unwrap());
    assert!(
        !store.create_function(&spec("a")).unwrap(),
        "duplicate names are refused"
    );
    let names: Vec<_> = store
        .list_functions()
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    let mut a = store.get_function("a").unwrap().unwrap();
    assert_eq!(a, spec("a"));
    a.memory_mb = 256;
    store.update_function(&a).unwrap();
    assert_eq!(store.get_function("a").unwrap().unwrap().memory_mb, 256);
    // Versions, aliases and concurrency settings live in the record.
    a.last_version = 2;
    a.versions
        .push(a.snapshot(2, Some("v2".into()), "r2".into(), now));
    a.aliases.push(nimbus_core::Alias {
        name: "live".into(),
        function_version: "2".into(),
        description: String::new(),
        additional_version: None,
        revision_id: "ra".into(),
    });
    a.reserved_concurrency = Some(3);
    a.provisioned.push(nimbus_core::ProvisionedConcurrency {
        qualifier: "live".into(),
        requested: 2,
        last_modified: now,
    });
    store.update_function(&a).unwrap();
    let back = store.get_function("a").unwrap().unwrap();
    assert_eq!(back, a);
    assert_eq!(back.versions[0].version, Some(2));
    assert_eq!(back.versions[0].memory_mb, 256);
    assert!(store.delete_function("a").unwrap());
    assert!(!store.delete_function("a").unwrap());
    assert!(store.get_function("a").unwrap().is_none());

    assert_eq!(store.get_setting("k").unwrap(), None);
    store.put_setting("k", "v1").unwrap();
    store.put_setting("k", "v2").unwrap();
    assert_eq!(store.get_setting("k").unwrap().as_deref(), Some("v2"));

    let ev = |t: i64, m: &str| LogEvent {
        timestamp_ms: t,
        ingestion_ms: t,
        message: m.into(),
    };
    assert!(
        store
            .list_log_streams("/aws/lambda/x", None)
            .unwrap()
            .is_none()
    );
    let append = |stream: &str, events: Vec<LogEvent>| LogAppend {
        group: "/aws/lambda/x".into(),
        stream: stream.into(),
        events,
    };
    store
        .append_log_events(&[append("s1", vec![ev(10, "START"), ev(11, "hello")])])
        .unwrap();
    store
        .append_log_events(&[append("s2", vec![ev(12, "other")]), append("s3", vec![])])
        .unwrap();
    assert!(!store.create_log_group("/aws/lambda/x", 0).unwrap());
    let streams = store
        .list_log_streams("/aws/lambda/x", None)
        .unwrap()
        .unwrap();
    assert_eq!(streams.len(), 2, "a batch without events creates no stream");
    assert_eq!(streams[0].first_event_ms, Some(10));
    assert_eq!(streams[0].last_event_ms, Some(11));
    let all = store
        .query_log_events(&LogQuery {
            group: "/aws/lambda/x".into(),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    let msgs: Vec<_> = all.iter().map(|e| e.event.message.as_str()).collect();
    assert_eq!(msgs, ["START", "hello", "other"]);
    let filtered = store
        .query_log_events(&LogQuery {
            group: "/aws/lambda/x".into(),
            contains: Some("hell".into()),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(filtered.len(), 1);
    let page = store
        .query_log_events(&LogQuery {
            group: "/aws/lambda/x".into(),
            streams: vec!["s1".into()],
            after_seq: Some(all[0].seq),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].event.message, "hello");
    let groups = store.list_log_groups(Some("/aws/lambda/")).unwrap();
    assert_eq!(groups.len(), 1);
    assert!(store.delete_log_group("/aws/lambda/x").unwrap());

    assert_eq!(store.get_doc("iam.user", "bob").unwrap(), None);
    store.put_doc("iam.user", "bob", r#"{"v":1}"#).unwrap();
    store.put_doc("iam.user", "bob", r#"{"v":2}"#).unwrap();
    store.put_doc("iam.user", "alice", "{}").unwrap();
    store.put_doc("iam.role", "r", "{}").unwrap();
    assert_eq!(
        store.get_doc("iam.user", "bob").unwrap().as_deref(),
        Some(r#"{"v":2}"#)
    );
    let users: Vec<String> = store
        .list_docs("iam.user")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(users, ["alice", "bob"], "one namespace, ordered by key");
    assert!(store.delete_doc("iam.user", "bob").unwrap());
    assert!(!store.delete_doc("iam.user", "bob").unwrap());
    assert!(store.list_log_groups(None).unwrap().is_empty());

    retention::test_suite(store);
    queue::test_suite(store);
    usage::test_suite(store);
}
