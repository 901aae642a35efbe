//! The S3 API on the shared port: which requests are S3's, and the
//! [`nimbus_s3::Gate`] through which the object store authenticates (our
//! access keys) and authorizes (IAM policies) them.
//!
//! A request is S3's when its SigV4 credential scope names service `s3`
//! (the `Authorization` header or a presigned URL's `X-Amz-Credential`),
//! when it is signed with SigV2 (`AWS key:sig`, or a presigned
//! `AWSAccessKeyId`; the AWS CLI v1 presigns that way), or when its Host is
//! `<bucket>.<s3 domain>`. It then goes to the s3s service whole, body
//! streamed: s3s verifies the signature itself (aws-chunked bodies carry
//! per-chunk signatures the auth middleware could not check).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use nimbus_auth::{Credential, KeyStore};
use nimbus_core::Identity;

use crate::Keys;

/// The service of a SigV4 credential (`AKID/date/region/service/aws4_request`).
fn credential_service(credential: &str) -> Option<&str> {
    let mut parts = credential.split('/');
    parts.nth(3)
}

/// Whether `req` is for the object store.
pub(crate) fn is_s3(req: &Request, domain: &str) -> bool {
    let headers = req.headers();
    if let Some(auth) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if auth.starts_with("AWS ") {
            return true;
        }
        if let Some(rest) = auth.split("Credential=").nth(1) {
            let credential = rest.split([',', ' ']).next().unwrap_or("");
            return credential_service(credential) == Some("s3");
        }
    }
    if let Some(query) = req.uri().query() {
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if k == "X-Amz-Credential" {
                let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
                return credential_service(&v) == Some("s3");
            }
            if k == "AWSAccessKeyId" {
                return true;
            }
        }
    }
    headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| nimbus_s3::virtual_bucket(domain, h))
        .is_some()
}

/// Hands `req` to the s3s service.
pub(crate) async fn call(s3: &nimbus_s3::S3Api, mut req: Request) -> Response {
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>().cloned() {
        req.extensions_mut()
            .insert(nimbus_s3::SourceIp(addr.ip().to_string()));
    }
    let expects_continue = req
        .headers()
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut service = s3.service().clone();
    let mut resp = match tower::Service::call(&mut service, req).await {
        Ok(resp) => resp.map(axum::body::Body::new),
        Err(e) => {
            tracing::error!("S3 request failed: {e:?}");
            http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    };
    // An error answered before the body was read (AccessDenied,
    // NoSuchBucket) to a client waiting for `100 Continue` (botocore's
    // PutObject and UploadPart): the client then never sends the body,
    // while hyper would read the client's next request as that body.
    // Only closing the connection keeps the two in step.
    if expects_continue && !resp.status().is_success() {
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    resp
}

/// nimbus's keys and IAM, as the object store's [`nimbus_s3::Gate`].
struct ApiGate {
    keys: Keys,
    iam: Arc<nimbus_iam::IamService>,
    identity: Identity,
}

impl KeyStore for ApiGate {
    fn lookup(&self, access_key_id: &str) -> Option<Credential> {
        self.keys.lookup(access_key_id)
    }
}

impl nimbus_s3::Gate for ApiGate {
    fn authorize(&self, access_key_id: &str, action: &str, resource: &str) -> Result<(), String> {
        // The root bypasses policies, as AWS's root user does.
        if self.iam.is_root(access_key_id) {
            return Ok(());
        }
        let principal = self
            .keys
            .lookup(access_key_id)
            .map(|c| c.principal)
            .unwrap_or_default();
        let context = nimbus_policy::Context::new()
            .with("aws:PrincipalArn", principal)
            .with("aws:PrincipalAccount", self.identity.account_id.clone())
            .with("aws:RequestedRegion", self.identity.region.clone());
        self.iam
            .authorize(access_key_id, action, resource, None, &context)
    }
}

/// The [`nimbus_s3::Gate`] over nimbus's access keys and IAM policies, as
/// for every other API: the root key may do anything, others what their
/// policies allow.
pub fn s3_gate(
    keys: Keys,
    iam: Arc<nimbus_iam::IamService>,
    identity: Identity,
) -> Arc<dyn nimbus_s3::Gate> {
    Arc::new(ApiGate {
        keys,
        iam,
        identity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(auth: Option<&str>, uri: &str, host: &str) -> Request {
        let mut b = http::Request::builder().uri(uri).header("host", host);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn s3_requests_are_told_apart() {
        let s3 = "AWS4-HMAC-SHA256 Credential=AKID/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=x";
        let lambda = s3.replace("/s3/", "/lambda/");
        assert!(is_s3(&req(Some(s3), "/b/k", "127.0.0.1:9070"), "localhost"));
        assert!(!is_s3(
            &req(Some(&lambda), "/2015-03-31/functions", "127.0.0.1:9070"),
            "localhost"
        ));
        assert!(is_s3(
            &req(
                None,
                "/b/k?X-Amz-Credential=AKID%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=x",
                "127.0.0.1"
            ),
            "localhost"
        ));
        assert!(is_s3(
            &req(None, "/k?AWSAccessKeyId=A&Signature=x&Expires=1", "h"),
            "localhost"
        ));
        assert!(is_s3(
            &req(None, "/k", "bucket.localhost:9070"),
            "localhost"
        ));
        assert!(!is_s3(
            &req(None, "/_nimbus/health", "localhost:9070"),
            "localhost"
        ));
    }
}
