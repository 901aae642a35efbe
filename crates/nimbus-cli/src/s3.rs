//! The object store in `nimbus serve`: opened under `<data-dir>/s3`, its
//! notifications delivered to Lambda through [`LambdaSink`].

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use nimbus_lambda::{EventOrigin, LambdaService};
use nimbus_s3::{Delivery, DeliveryError, NotificationSink, ObjectStore, S3Api, S3Settings};

/// S3 bucket notifications as asynchronous Lambda invocations, on behalf
/// of `s3.amazonaws.com`.
pub(crate) struct LambdaSink {
    lambda: Arc<LambdaService>,
}

const S3_PRINCIPAL: &str = "s3.amazonaws.com";

#[async_trait::async_trait]
impl NotificationSink for LambdaSink {
    async fn can_deliver(&self, function_arn: &str, bucket_arn: &str, account: &str) -> bool {
        let Ok(f) = self
            .lambda
            .identity()
            .parse_function_ref(function_arn, None)
        else {
            return false;
        };
        // S3 checks that the function's resource-based policy lets it
        // invoke the function for this bucket (AddPermission): the check
        // every delivery goes through.
        let origin = EventOrigin {
            principal: Some(S3_PRINCIPAL.into()),
            source_arn: Some(bucket_arn.into()),
            source_account: Some(account.into()),
            trace_header: None,
        };
        self.lambda
            .check_service_principal(&f, S3_PRINCIPAL, &origin)
            .is_ok()
    }

    async fn deliver(&self, d: Delivery) -> Result<(), DeliveryError> {
        let f = self
            .lambda
            .identity()
            .parse_function_ref(&d.function_arn, None)
            .map_err(|e| DeliveryError::Permanent(e.to_string()))?;
        let origin = EventOrigin {
            principal: Some(S3_PRINCIPAL.to_string()),
            source_arn: Some(d.bucket_arn),
            source_account: Some(d.source_account),
            trace_header: d.trace_header,
        };
        match self
            .lambda
            .invoke_event(&f, Bytes::from(d.payload), origin)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match e.code() {
                "ResourceNotFoundException"
                | "AccessDeniedException"
                | "InvalidParameterValueException"
                | "RequestTooLargeException" => Err(DeliveryError::Permanent(e.to_string())),
                _ => Err(DeliveryError::Transient(e.to_string())),
            },
        }
    }
}

/// Opens the object store under `<data_dir>/s3` and its S3 API.
pub(crate) async fn open(
    data_dir: &Path,
    domain: &str,
    lambda: &Arc<LambdaService>,
    keys: &nimbus_api::Keys,
    iam: &Arc<nimbus_iam::IamService>,
) -> Result<Arc<S3Api>> {
    let dir = data_dir.join("s3");
    let store = {
        let at = dir.clone();
        tokio::task::spawn_blocking(move || ObjectStore::open(&at))
            .await?
            .with_context(|| format!("opening the object store in {}", dir.display()))?
    };
    let identity = lambda.identity().clone();
    let gate = nimbus_api::s3_gate(keys.clone(), iam.clone(), identity.clone());
    let sink = Arc::new(LambdaSink {
        lambda: lambda.clone(),
    });
    Ok(Arc::new(S3Api::new(
        Arc::new(store),
        gate,
        sink,
        S3Settings {
            domain: domain.to_string(),
            region: identity.region,
            account_id: identity.account_id,
        },
    )))
}
