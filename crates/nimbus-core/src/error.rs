//! The Lambda service error: each variant is an AWS error code.

/// Result of a Lambda service operation.
pub type LambdaResult<T> = Result<T, LambdaError>;

/// An error a Lambda API call returns to its client. The variant names are
/// the AWS error codes; the message is what the client sees, so it never
/// carries internal detail (that is logged where it happens).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LambdaError {
    #[error("{0}")]
    ResourceNotFound(String),
    #[error("{0}")]
    ResourceConflict(String),
    #[error("{0}")]
    InvalidParameterValue(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    InvalidRequestContent(String),
    #[error("{0}")]
    RequestTooLarge(String),
    #[error("{0}")]
    RequestEntityTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{message}")]
    TooManyRequests {
        message: String,
        reason: &'static str,
        retry_after_s: u32,
    },
    #[error("{0}")]
    CodeStorageExceeded(String),
    #[error("{0}")]
    InvalidZipFile(String),
    #[error("{0}")]
    InvalidRuntime(String),
    #[error("{0}")]
    ResourceNotReady(String),
    #[error("{0}")]
    ProvisionedConcurrencyConfigNotFound(String),
    #[error("{0}")]
    Service(String),
    /// A resource-based policy does not allow the caller (a service
    /// principal delivering an event).
    #[error("{0}")]
    AccessDenied(String),
}

impl LambdaError {
    /// The AWS error code, as sent in `x-amzn-ErrorType`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ResourceNotFound(_) => "ResourceNotFoundException",
            Self::ResourceConflict(_) => "ResourceConflictException",
            Self::InvalidParameterValue(_) => "InvalidParameterValueException",
            Self::Validation(_) => "ValidationException",
            Self::InvalidRequestContent(_) => "InvalidRequestContentException",
            Self::RequestTooLarge(_) => "RequestTooLargeException",
            Self::RequestEntityTooLarge(_) => "RequestEntityTooLargeException",
            Self::UnsupportedMediaType(_) => "UnsupportedMediaTypeException",
            Self::PreconditionFailed(_) => "PreconditionFailedException",
            Self::TooManyRequests { .. } => "TooManyRequestsException",
            Self::CodeStorageExceeded(_) => "CodeStorageExceededException",
            Self::InvalidZipFile(_) => "InvalidZipFileException",
            Self::InvalidRuntime(_) => "InvalidRuntimeException",
            Self::ResourceNotReady(_) => "ResourceNotReadyException",
            Self::ProvisionedConcurrencyConfigNotFound(_) => {
                "ProvisionedConcurrencyConfigNotFoundException"
            }
            Self::Service(_) => "ServiceException",
            Self::AccessDenied(_) => "AccessDeniedException",
        }
    }

    /// The HTTP status AWS uses for this code.
    pub fn status(&self) -> u16 {
        match self {
            Self::ResourceNotFound(_) | Self::ProvisionedConcurrencyConfigNotFound(_) => 404,
            Self::ResourceConflict(_) => 409,
            Self::InvalidParameterValue(_)
            | Self::Validation(_)
            | Self::InvalidRequestContent(_)
            | Self::CodeStorageExceeded(_) => 400,
            Self::RequestTooLarge(_) | Self::RequestEntityTooLarge(_) => 413,
            Self::UnsupportedMediaType(_) => 415,
            Self::PreconditionFailed(_) => 412,
            Self::TooManyRequests { .. } => 429,
            Self::InvalidZipFile(_) | Self::InvalidRuntime(_) | Self::ResourceNotReady(_) => 502,
            Self::Service(_) => 500,
            Self::AccessDenied(_) => 403,
        }
    }

    /// Whether the caller (`User`) or the service (`Service`) is at fault, as
    /// Lambda reports in the body's `Type` field.
    pub fn fault(&self) -> &'static str {
        if self.status() >= 500 {
            "Service"
        } else {
            "User"
        }
    }

    /// An internal failure: the detail goes to the server log, the client
    /// gets a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {detail}");
        Self::Service("An internal error occurred; see the nimbus server log".into())
    }
}
