//! Who may do what: s3s verifies SigV4 (headers, presigned URLs,
//! aws-chunked chunk signatures) with the secrets our [`Gate`] knows; we
//! add the session-token check s3s does not make, and map each operation
//! to its IAM action and resource for the [`Gate`] to authorize.

use std::sync::Arc;

use nimbus_auth::KeyStore;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::dto::{CopyObjectInput, CopySource, DeleteObjectsInput};
use s3s::host::{S3Host, VirtualHost};
use s3s::path::S3Path;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Result};

/// The identity side nimbus provides: the access keys (root, IAM users'
/// and STS sessions') and IAM's policy evaluation.
pub trait Gate: KeyStore + Send + Sync + 'static {
    /// `Ok` when the key's principal may perform `action` (`s3:GetObject`)
    /// on `resource` (`arn:aws:s3:::bucket/key`); the root key always may.
    /// `Err` carries the AccessDenied message.
    fn authorize(&self, access_key_id: &str, action: &str, resource: &str) -> Result<(), String>;
}

pub(crate) struct Auth(pub(crate) Arc<dyn Gate>);

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.lookup(access_key) {
            Some(c) => Ok(SecretKey::from(c.secret_access_key)),
            None => Err(S3Error::with_message(
                S3ErrorCode::InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records.",
            )),
        }
    }
}

pub(crate) struct Access(pub(crate) Arc<dyn Gate>);

fn denied(message: String) -> S3Error {
    S3Error::with_message(S3ErrorCode::AccessDenied, message)
}

/// The IAM action of an S3 operation (IAM's service authorization
/// reference), and whether it is on the object rather than the bucket.
fn action_of(op: &str) -> (&'static str, bool) {
    match op {
        "ListBuckets" => ("s3:ListAllMyBuckets", false),
        "CreateBucket" => ("s3:CreateBucket", false),
        "DeleteBucket" => ("s3:DeleteBucket", false),
        "HeadBucket" | "ListObjects" | "ListObjectsV2" => ("s3:ListBucket", false),
        "GetBucketLocation" => ("s3:GetBucketLocation", false),
        "ListMultipartUploads" => ("s3:ListBucketMultipartUploads", false),
        "PutBucketNotificationConfiguration" => ("s3:PutBucketNotification", false),
        "GetBucketNotificationConfiguration" => ("s3:GetBucketNotification", false),
        "GetObject" | "HeadObject" => ("s3:GetObject", true),
        "PutObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload" => ("s3:PutObject", true),
        "DeleteObject" => ("s3:DeleteObject", true),
        "AbortMultipartUpload" => ("s3:AbortMultipartUpload", true),
        "ListParts" => ("s3:ListMultipartUploadParts", true),
        _ => ("s3:Unsupported", false),
    }
}

fn resource(path: &S3Path, on_object: bool) -> String {
    match path {
        S3Path::Root => "*".to_string(),
        S3Path::Bucket { bucket } => format!("arn:aws:s3:::{bucket}"),
        S3Path::Object { bucket, key } if on_object => format!("arn:aws:s3:::{bucket}/{key}"),
        S3Path::Object { bucket, .. } => format!("arn:aws:s3:::{bucket}"),
    }
}

/// The session token a request carries, in its header or presigned query.
fn session_token(cx: &S3AccessContext<'_>) -> Option<String> {
    if let Some(v) = cx.headers().get("x-amz-security-token") {
        return v.to_str().ok().map(str::to_string);
    }
    cx.uri().query().and_then(|q| {
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == "X-Amz-Security-Token").then(|| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
    })
}

impl Access {
    fn authorize(&self, access_key: &str, action: &str, resource: &str) -> S3Result<()> {
        self.0.authorize(access_key, action, resource).map_err(|m| {
            tracing::debug!(access_key, action, resource, "S3 access denied");
            denied(m)
        })
    }
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(creds) = cx.credentials() else {
            return Err(denied("Anonymous access is not allowed".into()));
        };
        let key = creds.access_key.clone();
        let Some(known) = self.0.lookup(&key) else {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records.",
            ));
        };
        // Temporary credentials are only valid with their own token.
        match (known.session_token, session_token(cx)) {
            (None, None) => {}
            (Some(expected), Some(given)) if expected == given => {}
            (Some(_), None) => {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidAccessKeyId,
                    "The AWS Access Key Id you provided does not exist in our records.",
                ));
            }
            _ => {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidToken,
                    "The provided token is malformed or otherwise invalid.",
                ));
            }
        }
        let op = cx.s3_op().name();
        if op == "DeleteObjects" {
            // Checked key by key below, as S3 does.
            return Ok(());
        }
        let (action, on_object) = action_of(op);
        self.authorize(&key, action, &resource(cx.s3_path(), on_object))
    }

    async fn copy_object(&self, req: &mut S3Request<CopyObjectInput>) -> S3Result<()> {
        let Some(creds) = &req.credentials else {
            return Err(denied("Anonymous access is not allowed".into()));
        };
        if let CopySource::Bucket { bucket, key, .. } = &req.input.copy_source {
            self.authorize(
                &creds.access_key,
                "s3:GetObject",
                &format!("arn:aws:s3:::{bucket}/{key}"),
            )?;
        }
        Ok(())
    }

    async fn delete_objects(&self, req: &mut S3Request<DeleteObjectsInput>) -> S3Result<()> {
        let Some(creds) = &req.credentials else {
            return Err(denied("Anonymous access is not allowed".into()));
        };
        for o in &req.input.delete.objects {
            self.authorize(
                &creds.access_key,
                "s3:DeleteObject",
                &format!("arn:aws:s3:::{}/{}", req.input.bucket, o.key),
            )?;
        }
        Ok(())
    }
}

/// Virtual-hosted-style addressing under one domain: `bucket.<domain>`
/// (any port) names a bucket; every other host is path-style.
pub(crate) struct Domain(pub(crate) String);

/// The host part of a `Host` header (without the port).
fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split(']').next().map_or(host, |h| &h[1..]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// The bucket a `Host` header names under `domain`, if any.
pub fn virtual_bucket<'a>(domain: &str, host: &'a str) -> Option<&'a str> {
    host_name(host)
        .strip_suffix(domain)?
        .strip_suffix('.')
        .filter(|b| !b.is_empty())
}

impl S3Host for Domain {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<VirtualHost<'a>> {
        let vh = VirtualHost::new(self.0.as_str());
        Ok(match virtual_bucket(&self.0, host) {
            Some(bucket) => vh.with_bucket(bucket),
            None => vh,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosts() {
        assert_eq!(virtual_bucket("localhost", "b.localhost:9070"), Some("b"));
        assert_eq!(virtual_bucket("localhost", "a.b.localhost"), Some("a.b"));
        assert_eq!(virtual_bucket("localhost", "localhost:9070"), None);
        assert_eq!(virtual_bucket("localhost", "127.0.0.1:9070"), None);
        assert_eq!(virtual_bucket("localhost", "[::1]:9070"), None);
    }
}
