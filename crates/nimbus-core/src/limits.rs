//! The Lambda quotas nimbus enforces, with the values AWS documents.

/// Smallest `MemorySize`, in MB.
pub const MEMORY_MIN_MB: u32 = 128;
/// Largest `MemorySize`, in MB.
pub const MEMORY_MAX_MB: u32 = 10_240;
/// Default `MemorySize`, in MB.
pub const MEMORY_DEFAULT_MB: u32 = 128;
/// Smallest `Timeout`, in seconds.
pub const TIMEOUT_MIN_S: u32 = 1;
/// Largest `Timeout`, in seconds.
pub const TIMEOUT_MAX_S: u32 = 900;
/// Default `Timeout`, in seconds.
pub const TIMEOUT_DEFAULT_S: u32 = 3;
/// Default and smallest `EphemeralStorage`, in MB.
pub const EPHEMERAL_MIN_MB: u32 = 512;
/// Largest `EphemeralStorage`, in MB.
pub const EPHEMERAL_MAX_MB: u32 = 10_240;
/// Zipped deployment package uploaded directly (`CodeSizeZipped`).
pub const CODE_ZIPPED_MAX: u64 = 50 * 1024 * 1024;
/// Unzipped deployment package (`CodeSizeUnzipped`).
pub const CODE_UNZIPPED_MAX: u64 = 250 * 1024 * 1024;
/// Total code storage per account (`TotalCodeSize`).
pub const TOTAL_CODE_MAX: u64 = 75 * 1024 * 1024 * 1024;
/// Most files a deployment package may hold; a zip with more is treated as a
/// bomb (AWS does not document a count, but no real package comes close).
pub const CODE_MAX_ENTRIES: usize = 100_000;
/// Request body of a CreateFunction / UpdateFunctionCode call: the 50 MB zip
/// base64-encoded, as AWS computes it.
pub const CODE_REQUEST_MAX: usize = 69_905_067;
/// Synchronous invocation request and response payloads.
pub const SYNC_PAYLOAD_MAX: usize = 6 * 1024 * 1024;
/// Asynchronous invocation payload.
pub const ASYNC_PAYLOAD_MAX: usize = 1024 * 1024;
/// Total size of environment variable names and values.
pub const ENV_VARS_MAX: usize = 4 * 1024;
/// The tail of the log returned with `LogType: Tail`.
pub const LOG_TAIL_MAX: usize = 4 * 1024;

/// The unreserved concurrency AWS keeps for functions without a
/// reservation: 100 of an account's (default 1,000). nimbus's account limit
/// is `--concurrency` (default 64), so the floor scales with it: a tenth of
/// the limit, at most 100. PutFunctionConcurrency and
/// PutProvisionedConcurrencyConfig refuse to go below it.
pub fn min_unreserved_concurrency(account_limit: u32) -> u32 {
    (account_limit / 10).min(100)
}
