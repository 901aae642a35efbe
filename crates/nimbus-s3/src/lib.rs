//! An S3-compatible object store: the subset of the S3 API real programs
//! use (buckets, objects with ranges and metadata, copies, listings,
//! multipart uploads, presigned URLs, virtual-hosted and path-style
//! addressing) and bucket notifications to Lambda.
//!
//! The protocol (routing, DTOs, XML, SigV4 incl. presigned URLs and
//! aws-chunked bodies with trailers, errors) is the `s3s` crate's; this
//! crate implements its [`s3s::S3`] trait over an [`ObjectStore`] (files
//! plus SQLite, module `store`), authenticates and authorizes through a
//! [`Gate`] (module `access`) and delivers notifications through a
//! [`NotificationSink`] (module `notify`), both implemented by the binary
//! so that this crate depends on neither IAM nor Lambda.

mod access;
mod notify;
mod service;
mod store;

use std::sync::Arc;

pub use access::{Gate, virtual_bucket};
pub use notify::{Delivery, DeliveryError, NotificationSink, Target, event_key};
pub use s3s::service::S3Service;
pub use store::ObjectStore;

/// Where and as whom the object store answers.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// The domain under which `bucket.<domain>` is virtual-hosted-style
    /// addressing (`localhost`).
    pub domain: String,
    pub region: String,
    pub account_id: String,
}

/// The client address a request came from, put into the request's
/// extensions by the HTTP layer (`sourceIPAddress` of S3 events).
#[derive(Debug, Clone)]
pub struct SourceIp(pub String);

/// The object store's S3 API.
pub struct S3Api {
    service: S3Service,
    store: Arc<ObjectStore>,
    sink: Arc<dyn NotificationSink>,
    settings: S3Settings,
}

impl std::fmt::Debug for S3Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Api")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl S3Api {
    /// The S3 API over `store`, authenticating with `gate`, notifying
    /// `sink`.
    pub fn new(
        store: Arc<ObjectStore>,
        gate: Arc<dyn Gate>,
        sink: Arc<dyn NotificationSink>,
        settings: S3Settings,
    ) -> S3Api {
        let imp = service::Objects {
            store: store.clone(),
            sink: sink.clone(),
            settings: settings.clone(),
        };
        let mut builder = s3s::service::S3ServiceBuilder::new(imp);
        builder.set_auth(access::Auth(gate.clone()));
        builder.set_access(access::Access(gate));
        builder.set_host(access::Domain(settings.domain.clone()));
        S3Api {
            service: builder.build(),
            store,
            sink,
            settings,
        }
    }

    /// The hyper/tower service answering S3 requests.
    pub fn service(&self) -> &S3Service {
        &self.service
    }

    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    pub fn store(&self) -> &Arc<ObjectStore> {
        &self.store
    }

    /// Hands the notifications left in the outbox (by a crash, or
    /// deliveries that kept failing) to the sink again; call at startup.
    pub async fn redeliver_pending(&self) {
        let store = self.store.clone();
        let pending = match tokio::task::spawn_blocking(move || store.outbox()).await {
            Ok(Ok(p)) => p,
            _ => return,
        };
        if !pending.is_empty() {
            tracing::info!(count = pending.len(), "redelivering S3 notifications");
        }
        notify::deliver_all(
            self.store.clone(),
            self.sink.clone(),
            self.settings.account_id.clone(),
            pending,
        )
        .await;
    }

    /// The bucket notification configurations that target `function_arn`
    /// (for `nimbus trigger list`): `(bucket, configuration)` pairs.
    pub async fn notifications_for_function(
        &self,
        function_arn: &str,
    ) -> std::io::Result<Vec<(String, Target)>> {
        let store = self.store.clone();
        let arn = function_arn.to_string();
        tokio::task::spawn_blocking(move || store.notifications_for_function(&arn))
            .await
            .map_err(std::io::Error::other)?
    }
}
