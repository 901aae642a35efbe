//! Asynchronous invocations on behalf of event sources (S3 notifications,
//! schedules, destinations): the one entry point they share.

use std::sync::Arc;

use bytes::Bytes;
use nimbus_core::{FunctionRef, LambdaError, LambdaResult, limits};
use serde::{Deserialize, Serialize};

use crate::LambdaService;

/// Who asks for an asynchronous invocation, for the function's
/// resource-based policy and for recursive-loop detection. Stored with
/// the queued event.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EventOrigin {
    /// The service principal invoking (`s3.amazonaws.com`,
    /// `scheduler.amazonaws.com`, `events.amazonaws.com`); `None` for
    /// nimbus itself (destinations, replays) and for API callers (IAM
    /// checked those already).
    pub principal: Option<String>,
    /// The resource the event comes from (the bucket's or rule's ARN), for
    /// `AWS:SourceArn` conditions.
    pub source_arn: Option<String>,
    /// The account owning that resource (`AWS:SourceAccount`).
    pub source_account: Option<String>,
    /// The X-Ray style trace header (`X-Amzn-Trace-Id`) of the request
    /// that caused the event, carrying the `Lineage` of a chain of calls.
    pub trace_header: Option<String>,
}

impl LambdaService {
    /// Queues an `Event` invocation of `f` with `payload` for `origin`;
    /// returns the request ID the invocation will run with. The event is
    /// on disk when this returns. A service principal must be allowed
    /// `lambda:InvokeFunction` by the function's resource-based policy
    /// (AddPermission), with its `AWS:SourceArn` / `AWS:SourceAccount`
    /// conditions.
    pub async fn invoke_event(
        self: &Arc<Self>,
        f: &FunctionRef,
        payload: Bytes,
        origin: EventOrigin,
    ) -> LambdaResult<String> {
        self.resolve(f)?;
        let payload = check_payload(payload, limits::ASYNC_PAYLOAD_MAX)?;
        if let Some(p) = origin.principal.as_deref() {
            self.check_service_principal(f, p, &origin)?;
        }
        self.enqueue(f, payload, &origin).await
    }

    fn check_service_principal(
        &self,
        f: &FunctionRef,
        principal: &str,
        origin: &EventOrigin,
    ) -> LambdaResult<()> {
        let arn = self.identity.function_arn(&f.name);
        let policy = self
            .policy_document(&f.name)
            .and_then(|doc| nimbus_policy::Policy::parse(&doc).ok());
        let mut ctx = nimbus_policy::Context::new();
        if let Some(a) = &origin.source_arn {
            ctx = ctx.with("aws:SourceArn", a.clone());
        }
        if let Some(a) = &origin.source_account {
            ctx = ctx.with("aws:SourceAccount", a.clone());
        }
        let who = nimbus_policy::Principal::service(principal);
        let req = nimbus_policy::Request {
            principal: &who,
            action: "lambda:InvokeFunction",
            resource: &arn,
            context: &ctx,
        };
        match nimbus_policy::evaluate(&[], policy.as_ref(), &req) {
            nimbus_policy::Decision::Allow => Ok(()),
            _ => Err(LambdaError::AccessDenied(format!(
                "{principal} is not authorized to perform: lambda:InvokeFunction on resource: {arn}{} \
                 because the function's resource-based policy does not allow it (see AddPermission)",
                origin
                    .source_arn
                    .as_deref()
                    .map(|s| format!(" for source {s}"))
                    .unwrap_or_default()
            ))),
        }
    }
}

/// Lambda's payload checks: the size limit, then JSON (an empty payload
/// is `{}`).
pub(crate) fn check_payload(payload: Bytes, max: usize) -> LambdaResult<Bytes> {
    if payload.len() > max {
        return Err(LambdaError::RequestTooLarge(format!(
            "Request must be smaller than {max} bytes for the InvokeFunction operation"
        )));
    }
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(Bytes::from_static(b"{}"));
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
        return Err(LambdaError::InvalidRequestContent(format!(
            "Could not parse request body into json: Could not parse payload into json: {e}"
        )));
    }
    Ok(payload)
}
