//! Domain types shared by every nimbus layer: identities (region, account,
//! ARNs), Lambda function specifications and the limits that apply to them,
//! and the service error whose variants are the AWS error codes.
//!
//! Nothing here knows a wire format: the API crate maps these types to and
//! from JSON, and the store crate persists them.

pub mod arn;
pub mod error;
pub mod function;
pub mod limits;

pub use arn::{FunctionRef, Identity, Qualifier, validate_alias_name};
pub use error::{LambdaError, LambdaResult};
pub use function::{
    Alias, FunctionSettings, FunctionSpec, FunctionState, LastUpdateStatus, ProvisionedConcurrency,
    RuntimeId,
};
