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
        match origin.principal.as_deref() {
            Some(p) => self.check_service_principal(f, p, &origin)?,
            None => {
                self.resolve(f)?;
            }
        }
        let payload = check_payload(payload, limits::ASYNC_PAYLOAD_MAX)?;
        self.enqueue(f, payload, &origin).await
    }

    /// Whether the service `principal` may invoke `f` for `origin`'s
    /// source: the function (version, alias) exists and its resource-based
    /// policy allows it. `invoke_event` asks for every event; S3 asks when
    /// a notification configuration names the function.
    pub fn check_service_principal(
        &self,
        f: &FunctionRef,
        principal: &str,
        origin: &EventOrigin,
    ) -> LambdaResult<()> {
        self.resolve(f)?;
        let arn = self.identity.function_arn(&f.name);
        service_may_invoke(
            self.policy_document(&f.name).as_deref(),
            &arn,
            principal,
            origin,
        )
    }
}

/// Whether a function's resource-based policy (`policy`, as GetPolicy
/// shows it) lets the service `principal` invoke it for `origin`'s source.
pub(crate) fn service_may_invoke(
    policy: Option<&str>,
    function_arn: &str,
    principal: &str,
    origin: &EventOrigin,
) -> LambdaResult<()> {
    let policy = policy.and_then(|doc| nimbus_policy::Policy::parse(doc).ok());
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
        resource: function_arn,
        context: &ctx,
    };
    match nimbus_policy::evaluate(&[], policy.as_ref(), &req) {
        nimbus_policy::Decision::Allow => Ok(()),
        _ => Err(LambdaError::AccessDenied(format!(
            "{principal} is not authorized to perform: lambda:InvokeFunction on resource: {function_arn}{} \
             because the function's resource-based policy does not allow it (see AddPermission)",
            origin
                .source_arn
                .as_deref()
                .map(|s| format!(" for source {s}"))
                .unwrap_or_default()
        ))),
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

#[cfg(test)]
mod tests {
    use nimbus_core::function::Permission;

    use super::*;

    const ARN: &str = "arn:aws:lambda:us-east-1:000000000000:function:thumbs";

    fn policy(perms: &[Permission]) -> String {
        crate::permissions::document(ARN, perms)
    }

    fn s3(bucket: Option<&str>, account: Option<&str>) -> Permission {
        Permission {
            sid: "s3".into(),
            action: "lambda:InvokeFunction".into(),
            principal: "s3.amazonaws.com".into(),
            source_arn: bucket.map(|b| format!("arn:aws:s3:::{b}")),
            source_account: account.map(str::to_string),
        }
    }

    fn origin(bucket: &str, account: &str) -> EventOrigin {
        EventOrigin {
            principal: Some("s3.amazonaws.com".into()),
            source_arn: Some(format!("arn:aws:s3:::{bucket}")),
            source_account: Some(account.into()),
            trace_header: None,
        }
    }

    #[test]
    fn a_service_needs_a_statement_naming_it_and_its_source() {
        let p = policy(&[s3(Some("photos"), Some("000000000000"))]);
        let ok = origin("photos", "000000000000");
        assert_eq!(
            service_may_invoke(Some(&p), ARN, "s3.amazonaws.com", &ok),
            Ok(())
        );
        for (who, o) in [
            ("s3.amazonaws.com", origin("other-bucket", "000000000000")),
            ("s3.amazonaws.com", origin("photos", "111111111111")),
            ("events.amazonaws.com", ok.clone()),
        ] {
            let e = service_may_invoke(Some(&p), ARN, who, &o).unwrap_err();
            assert_eq!(e.code(), "AccessDeniedException", "{who} {o:?}");
            assert_eq!(e.status(), 403);
        }
        let e = service_may_invoke(None, ARN, "s3.amazonaws.com", &ok).unwrap_err();
        assert!(e.to_string().contains("see AddPermission"), "{e}");
        // A statement without conditions allows any source, as on AWS.
        let open = policy(&[s3(None, None)]);
        let any = origin("anything", "222222222222");
        assert_eq!(
            service_may_invoke(Some(&open), ARN, "s3.amazonaws.com", &any),
            Ok(())
        );
        // Wildcards in SourceArn (ArnLike).
        let wild = policy(&[s3(Some("photos-*"), None)]);
        let o = origin("photos-2024", "000000000000");
        assert_eq!(
            service_may_invoke(Some(&wild), ARN, "s3.amazonaws.com", &o),
            Ok(())
        );
    }
}
