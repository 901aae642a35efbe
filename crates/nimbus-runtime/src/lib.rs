//! Execution environments for nimbus functions.
//!
//! The [`Engine`] keeps, per function, a pool of warm environments; an
//! invocation takes an idle one or starts a new one (a cold start), hands it
//! the event through the Lambda Runtime API (module `api`), and waits for the
//! runtime's answer, the function's timeout or the environment's death.
//! Each invocation's output, framed by START / END / REPORT lines, goes to a
//! log sink as a [`LogBatch`]. This crate never touches the database: the
//! caller owns persistence.

mod api;
mod budget;
mod catalog;
mod engine;
mod env;
mod logs;

pub use budget::EnvironmentStats;
pub use catalog::RuntimeCatalog;
pub use engine::{
    CredentialSource, EndpointServer, Engine, EngineConfig, FunctionHandle, InvocationMetrics,
    InvokeOutcome, InvokeRequest, Isolation, JailSettings, RootCredentials, TempCredentials,
};
pub use engine::{ProvisionedState, ProvisionedStatus};
pub use logs::{LogBatch, LogLine};

/// The Python runtime's bootstrap, embedded so the binary is all there is
/// to install.
pub const PYTHON_BOOTSTRAP: &str = include_str!("../../../runtimes/python/bootstrap.py");
/// The Node.js runtime's bootstrap.
pub const NODE_BOOTSTRAP: &str = include_str!("../../../runtimes/nodejs/bootstrap.js");
