//! The S3 operations, as an implementation of s3s's [`S3`] trait over the
//! [`ObjectStore`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use s3s::crypto::{Checksum, Md5};
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::notify::{self, EventInfo, NotificationSink, Pending};
use crate::store::{Attrs, ObjectMeta, ObjectStore, PartMeta, internal, no_such_bucket, now_ms};
use crate::{S3Settings, SourceIp};

/// The largest single PUT (and part) S3 accepts: 5 GiB.
const MAX_PUT: u64 = 5 * 1024 * 1024 * 1024;
/// The smallest part but the last of a multipart upload.
const MIN_PART: u64 = 5 * 1024 * 1024;
const MAX_KEY_LEN: usize = 1024;
/// Bodies up to this size are read whole and sent in one write.
const SMALL_BODY: u64 = 256 * 1024;

pub(crate) struct Objects {
    pub(crate) store: Arc<ObjectStore>,
    pub(crate) sink: Arc<dyn NotificationSink>,
    pub(crate) settings: S3Settings,
}

fn err(code: S3ErrorCode, message: &str) -> S3Error {
    S3Error::with_message(code, message.to_string())
}

fn timestamp(ms: i64) -> Timestamp {
    let ms = u64::try_from(ms).unwrap_or(0);
    Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

fn request_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_ascii_uppercase()
}

/// A stream error: the one s3s raised (a chunk signature or checksum that
/// does not match) or a body that ended early.
fn body_error(e: s3s::StdError) -> S3Error {
    match e.downcast::<S3Error>() {
        Ok(s3) => *s3,
        Err(e) => err(S3ErrorCode::IncompleteBody, &e.to_string()),
    }
}

fn check_key(key: &str) -> S3Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(err(S3ErrorCode::KeyTooLongError, "Your key is too long"));
    }
    Ok(())
}

/// Percent-encodes for `EncodingType=url` listings (botocore decodes).
fn url_encode(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

fn attrs_of(
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    metadata: Option<Metadata>,
) -> Attrs {
    Attrs {
        content_type,
        content_encoding,
        content_disposition,
        content_language,
        cache_control,
        metadata: metadata
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
    }
}

fn user_metadata(attrs: &Attrs) -> Option<Metadata> {
    (!attrs.metadata.is_empty()).then(|| {
        attrs
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
}

fn content_type(attrs: &Attrs) -> String {
    attrs
        .content_type
        .clone()
        .unwrap_or_else(|| "binary/octet-stream".to_string())
}

/// The response headers S3 puts on every answer that created an event.
fn with_ids<T>(output: T, request_id: &str, host_id: &str) -> S3Response<T> {
    let mut r = S3Response::new(output);
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        r.headers.insert("x-amz-request-id", v);
    }
    if let Ok(v) = http::HeaderValue::from_str(host_id) {
        r.headers.insert("x-amz-id-2", v);
    }
    r
}

const ALGORITHMS: [&str; 5] = ["crc32", "crc32c", "sha1", "sha256", "crc64nvme"];

/// The checksums a request announces for its body (`x-amz-checksum-*`
/// headers, or trailers named by `x-amz-trailer`, as boto3 and the SDKs
/// send by default), computed while the body is written and then checked.
struct Checksums {
    hasher: s3s::checksum::ChecksumHasher,
    /// Each announced algorithm and the value its header gave (else it
    /// comes in the trailers).
    announced: Vec<(&'static str, Option<String>)>,
    trailers: Option<s3s::TrailingHeaders>,
}

impl Checksums {
    fn of(headers: &http::HeaderMap, trailers: Option<s3s::TrailingHeaders>) -> Checksums {
        let trailer_names = headers
            .get("x-amz-trailer")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let mut hasher = s3s::checksum::ChecksumHasher::default();
        let mut announced = Vec::new();
        for algorithm in ALGORITHMS {
            let name = format!("x-amz-checksum-{algorithm}");
            let header = headers
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let trailer = trailer_names.split(',').any(|n| n.trim() == name);
            if header.is_none() && !trailer {
                continue;
            }
            match algorithm {
                "crc32" => hasher.crc32 = Some(Default::default()),
                "crc32c" => hasher.crc32c = Some(Default::default()),
                "sha1" => hasher.sha1 = Some(Default::default()),
                "sha256" => hasher.sha256 = Some(Default::default()),
                _ => hasher.crc64nvme = Some(Default::default()),
            }
            announced.push((algorithm, header));
        }
        Checksums {
            hasher,
            announced,
            trailers,
        }
    }

    /// Checks the body's checksums against the announced ones (the body
    /// has been read whole, so the trailers are in).
    fn verify(self) -> S3Result<s3s::dto::Checksum> {
        let computed = self.hasher.finalize();
        let trailers = self.trailers.and_then(|t| t.take()).unwrap_or_default();
        for (algorithm, header) in self.announced {
            let name = format!("x-amz-checksum-{algorithm}");
            let expected = header.or_else(|| {
                trailers
                    .get(&name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            });
            let Some(expected) = expected else {
                continue;
            };
            let actual = match algorithm {
                "crc32" => &computed.checksum_crc32,
                "crc32c" => &computed.checksum_crc32c,
                "sha1" => &computed.checksum_sha1,
                "sha256" => &computed.checksum_sha256,
                _ => &computed.checksum_crc64nvme,
            };
            if actual.as_deref() != Some(expected.as_str()) {
                return Err(err(
                    S3ErrorCode::BadDigest,
                    &format!(
                        "The {} you specified did not match the calculated checksum.",
                        algorithm.to_ascii_uppercase()
                    ),
                ));
            }
        }
        Ok(computed)
    }
}

/// A written body: its temporary file, size, MD5 and the ETag it will
/// have (the MD5's hex, or a multipart ETag).
struct Written {
    temp: PathBuf,
    size: u64,
    md5: [u8; 16],
    etag: String,
}

impl Objects {
    async fn blocking<T, F>(&self, f: F) -> S3Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ObjectStore) -> S3Result<T> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(internal)?
    }

    async fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        let b = bucket.to_string();
        if self.blocking(move |s| s.bucket_exists(&b)).await? {
            Ok(())
        } else {
            Err(no_such_bucket())
        }
    }

    fn event_info<T>(&self, req: &S3Request<T>, event_name: &str) -> EventInfo {
        let principal_id = match &req.credentials {
            Some(c) => format!("AWS:{}", c.access_key),
            None => "Anonymous".to_string(),
        };
        EventInfo {
            event_name: event_name.to_string(),
            region: self.settings.region.clone(),
            account_id: self.settings.account_id.clone(),
            principal_id,
            source_ip: req
                .extensions
                .get::<SourceIp>()
                .map_or_else(|| "127.0.0.1".to_string(), |s| s.0.clone()),
            request_id: request_id(),
            host_id: uuid::Uuid::new_v4().simple().to_string(),
            time_ms: now_ms(),
            trace_header: req
                .headers
                .get("x-amzn-trace-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        }
    }

    /// Hands committed notifications to the sink in the background.
    fn notify(&self, pending: Vec<Pending>) {
        if pending.is_empty() {
            return;
        }
        tokio::spawn(notify::deliver_all(
            self.store.clone(),
            self.sink.clone(),
            self.settings.account_id.clone(),
            pending,
        ));
    }

    /// Streams `body` into a fsynced temporary file, checking `checks`.
    async fn write_temp(
        &self,
        body: Option<StreamingBlob>,
        max: u64,
        mut checks: Checksums,
    ) -> S3Result<(Written, s3s::dto::Checksum)> {
        let temp = self.store.temp_path();
        let result = async {
            let file = tokio::fs::File::create(&temp).await.map_err(internal)?;
            let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
            let mut md5 = Md5::new();
            let mut size = 0u64;
            if let Some(mut body) = body {
                while let Some(chunk) = body.next().await {
                    let chunk = chunk.map_err(body_error)?;
                    size += chunk.len() as u64;
                    if size > max {
                        return Err(err(
                            S3ErrorCode::EntityTooLarge,
                            "Your proposed upload exceeds the maximum allowed object size.",
                        ));
                    }
                    md5.update(&chunk);
                    checks.hasher.update(&chunk);
                    out.write_all(&chunk).await.map_err(internal)?;
                }
            }
            let sums = checks.verify()?;
            out.flush().await.map_err(internal)?;
            out.into_inner().sync_all().await.map_err(internal)?;
            Ok((size, md5.finalize(), sums))
        }
        .await;
        match result {
            Ok((size, md5, sums)) => Ok((
                Written {
                    temp,
                    size,
                    md5,
                    etag: hex::encode(md5),
                },
                sums,
            )),
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                Err(e)
            }
        }
    }

    /// Moves a written body into place and commits it as `bucket`/`key`.
    async fn commit(
        &self,
        bucket: &str,
        key: &str,
        w: &Written,
        attrs: Attrs,
        event: &EventInfo,
        finish_upload: Option<String>,
    ) -> S3Result<ObjectMeta> {
        let temp = w.temp.clone();
        let file = match self
            .blocking(move |s| s.install(&temp).map_err(internal))
            .await
        {
            Ok(f) => f,
            Err(e) => {
                let _ = tokio::fs::remove_file(&w.temp).await;
                return Err(e);
            }
        };
        let meta = ObjectMeta {
            key: key.to_string(),
            file: file.clone(),
            size: w.size,
            etag: w.etag.clone(),
            last_modified_ms: event.time_ms,
            attrs,
        };
        let (b, m, e) = (bucket.to_string(), meta.clone(), event.clone());
        let committed = self
            .blocking(move |s| s.commit_object(&b, &m, &e, finish_upload.as_deref()))
            .await;
        match committed {
            Ok((unlink, pending)) => {
                self.blocking(move |s| {
                    s.remove_bodies(&unlink);
                    Ok(())
                })
                .await?;
                self.notify(pending);
                Ok(meta)
            }
            Err(e) => {
                self.blocking(move |s| {
                    s.remove_bodies(&[file]);
                    Ok(())
                })
                .await?;
                Err(e)
            }
        }
    }

    async fn open_body(&self, bucket: &str, key: &str) -> S3Result<(ObjectMeta, tokio::fs::File)> {
        // A concurrent overwrite may unlink the body between the lookup
        // and the open: look again.
        for _ in 0..3 {
            let (b, k) = (bucket.to_string(), key.to_string());
            let meta = self.blocking(move |s| s.require_object(&b, &k)).await?;
            match tokio::fs::File::open(self.store.body_path(&meta.file)).await {
                Ok(f) => return Ok((meta, f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(internal(e)),
            }
        }
        Err(internal("object body keeps disappearing"))
    }

    /// One page of a listing: objects and common prefixes in key order.
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        delimiter: &str,
        start: &str,
        max_keys: usize,
    ) -> S3Result<Listing> {
        let mut out = Listing::default();
        let mut after = start.to_string();
        loop {
            let (b, p, a) = (bucket.to_string(), prefix.to_string(), after.clone());
            let want = (max_keys - out.len()).min(1000) + 1;
            let rows = self
                .blocking(move |s| s.list_objects(&b, &p, &a, want))
                .await?;
            if rows.is_empty() {
                return Ok(out);
            }
            let mut skipped = false;
            for row in rows {
                if out.len() == max_keys {
                    out.truncated = true;
                    out.resume = after;
                    return Ok(out);
                }
                let rest = &row.key[prefix.len()..];
                if let Some(i) = (!delimiter.is_empty())
                    .then(|| rest.find(delimiter))
                    .flatten()
                {
                    let cp = format!("{prefix}{}", &rest[..i + delimiter.len()]);
                    // Everything under this prefix sorts before this bound.
                    after = format!("{cp}\u{10FFFF}");
                    out.last = cp.clone();
                    out.prefixes.push(cp);
                    skipped = true;
                    break;
                }
                after = row.key.clone();
                out.last = row.key.clone();
                out.objects.push(row);
            }
            if !skipped && out.len() < max_keys {
                // Fewer rows than asked: the end.
                continue;
            }
            if out.len() == max_keys {
                let (b, p, a) = (bucket.to_string(), prefix.to_string(), after.clone());
                let more = self
                    .blocking(move |s| s.list_objects(&b, &p, &a, 1))
                    .await?;
                out.truncated = !more.is_empty();
                out.resume = after;
                return Ok(out);
            }
        }
    }
}

#[derive(Default)]
struct Listing {
    objects: Vec<ObjectMeta>,
    prefixes: Vec<String>,
    truncated: bool,
    /// The last key or prefix listed (ListObjects' NextMarker).
    last: String,
    /// Where the next page starts: after the last key, or after every key
    /// under the last common prefix (the continuation token).
    resume: String,
}

impl Listing {
    fn len(&self) -> usize {
        self.objects.len() + self.prefixes.len()
    }

    /// `Contents`, keys URL-encoded if asked (both ListObjects versions).
    fn contents(&self, encode: bool) -> Vec<Object> {
        self.objects
            .iter()
            .map(|o| object_entry(o, encode))
            .collect()
    }

    /// `CommonPrefixes`, absent when there are none.
    fn common_prefixes(&self, encode: bool) -> Option<Vec<CommonPrefix>> {
        (!self.prefixes.is_empty()).then(|| {
            self.prefixes
                .iter()
                .map(|p| CommonPrefix {
                    prefix: Some(if encode { url_encode(p) } else { p.clone() }),
                })
                .collect()
        })
    }
}

fn object_entry(o: &ObjectMeta, encode: bool) -> Object {
    Object {
        key: Some(if encode {
            url_encode(&o.key)
        } else {
            o.key.clone()
        }),
        e_tag: Some(ETag::Strong(o.etag.clone())),
        size: i64::try_from(o.size).ok(),
        last_modified: Some(timestamp(o.last_modified_ms)),
        storage_class: Some(ObjectStorageClass::from_static(
            ObjectStorageClass::STANDARD,
        )),
        ..Default::default()
    }
}

/// A continuation token: the hex of the resume point.
fn token_to_after(token: &str) -> S3Result<String> {
    hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            err(
                S3ErrorCode::InvalidArgument,
                "The continuation token provided is incorrect",
            )
        })
}

fn max_keys(v: Option<i32>) -> S3Result<usize> {
    match v {
        None => Ok(1000),
        Some(n) if n < 0 => Err(err(
            S3ErrorCode::InvalidArgument,
            "Provided max-keys not an integer or within integer range",
        )),
        Some(n) => Ok(usize::try_from(n).unwrap_or(1000).min(1000)),
    }
}

/// Copies `from` into a new fsynced temporary file, hashing it.
fn copy_to_temp(store: &ObjectStore, from: &std::path::Path) -> std::io::Result<Written> {
    use std::io::{Read, Write};
    let temp = store.temp_path();
    let mut src = std::fs::File::open(from)?;
    let mut dst = std::fs::File::create(&temp)?;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        size += n as u64;
    }
    dst.sync_all()?;
    let md5 = md5.finalize();
    Ok(Written {
        temp,
        size,
        md5,
        etag: hex::encode(md5),
    })
}

#[async_trait::async_trait]
impl S3 for Objects {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        let b = bucket.clone();
        self.blocking(move |s| s.create_bucket(&b)).await?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let rows = self.blocking(|s| s.list_buckets()).await?;
        let buckets = rows
            .into_iter()
            .map(|(name, created)| Bucket {
                name: Some(name),
                creation_date: Some(timestamp(created)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(Owner {
                display_name: Some("nimbus".into()),
                id: Some(self.settings.account_id.clone()),
            }),
            ..Default::default()
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(self.settings.region.clone()),
            ..Default::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        let region = &self.settings.region;
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: (region != "us-east-1")
                .then(|| BucketLocationConstraint::from(region.clone())),
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let b = req.input.bucket;
        self.blocking(move |s| {
            let files = s.delete_bucket(&b)?;
            s.remove_bodies(&files);
            Ok(())
        })
        .await?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn put_object(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let event = self.event_info(&req, "ObjectCreated:Put");
        let checks = Checksums::of(&req.headers, req.trailing_headers.take());
        let input = req.input;
        check_key(&input.key)?;
        self.require_bucket(&input.bucket).await?;
        let (w, sums) = self.write_temp(input.body, MAX_PUT, checks).await?;
        if let Some(expected) = &input.content_md5 {
            use base64::Engine;
            let given = base64::engine::general_purpose::STANDARD.decode(expected);
            if given.as_deref() != Ok(&w.md5[..]) {
                let _ = tokio::fs::remove_file(&w.temp).await;
                return Err(match given {
                    Ok(g) if g.len() == 16 => err(
                        S3ErrorCode::BadDigest,
                        "The Content-MD5 you specified did not match what we received.",
                    ),
                    _ => err(
                        S3ErrorCode::InvalidDigest,
                        "The Content-MD5 you specified was invalid.",
                    ),
                });
            }
        }
        let attrs = attrs_of(
            input.content_type,
            input.content_encoding,
            input.content_disposition,
            input.content_language,
            input.cache_control,
            input.metadata,
        );
        let etag = hex::encode(w.md5);
        self.commit(&input.bucket, &input.key, &w, attrs, &event, None)
            .await?;
        Ok(with_ids(
            PutObjectOutput {
                e_tag: Some(ETag::Strong(etag)),
                checksum_crc32: sums.checksum_crc32,
                checksum_crc32c: sums.checksum_crc32c,
                checksum_sha1: sums.checksum_sha1,
                checksum_sha256: sums.checksum_sha256,
                checksum_crc64nvme: sums.checksum_crc64nvme,
                ..Default::default()
            },
            &event.request_id,
            &event.host_id,
        ))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let (meta, mut file) = self.open_body(&input.bucket, &input.key).await?;
        if let Some(ETagCondition::ETag(tag)) = &input.if_none_match
            && tag.value() == meta.etag
        {
            return Err(S3Error::new(S3ErrorCode::NotModified));
        }
        if let Some(ETagCondition::ETag(tag)) = &input.if_match
            && tag.value() != meta.etag
        {
            return Err(S3Error::new(S3ErrorCode::PreconditionFailed));
        }
        let (range, content_range) = match &input.range {
            None => (0..meta.size, None),
            Some(r) => {
                let range = r.check(meta.size)?;
                let cr = format!(
                    "bytes {}-{}/{}",
                    range.start,
                    range.end.saturating_sub(1),
                    meta.size
                );
                (range, Some(cr))
            }
        };
        let len = range.end - range.start;
        if range.start > 0 {
            file.seek(std::io::SeekFrom::Start(range.start))
                .await
                .map_err(internal)?;
        }
        let body = if len <= SMALL_BODY {
            // Small bodies leave in one piece, with the headers in one
            // write (a stream would be polled through the blocking pool).
            let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            file.take(len)
                .read_to_end(&mut buf)
                .await
                .map_err(internal)?;
            StreamingBlob::from(s3s::Body::from(bytes::Bytes::from(buf)))
        } else {
            StreamingBlob::wrap(tokio_util::io::ReaderStream::with_capacity(
                file.take(len),
                256 * 1024,
            ))
        };
        let attrs = &meta.attrs;
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: i64::try_from(len).ok(),
            content_range,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(meta.etag.clone())),
            last_modified: Some(timestamp(meta.last_modified_ms)),
            content_type: Some(content_type(attrs)),
            content_encoding: attrs.content_encoding.clone(),
            content_disposition: attrs.content_disposition.clone(),
            content_language: attrs.content_language.clone(),
            cache_control: attrs.cache_control.clone(),
            metadata: user_metadata(attrs),
            ..Default::default()
        }))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let (b, k) = (req.input.bucket, req.input.key);
        let meta = self.blocking(move |s| s.require_object(&b, &k)).await?;
        let attrs = &meta.attrs;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: i64::try_from(meta.size).ok(),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(meta.etag.clone())),
            last_modified: Some(timestamp(meta.last_modified_ms)),
            content_type: Some(content_type(attrs)),
            content_encoding: attrs.content_encoding.clone(),
            content_disposition: attrs.content_disposition.clone(),
            content_language: attrs.content_language.clone(),
            cache_control: attrs.cache_control.clone(),
            metadata: user_metadata(attrs),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let event = self.event_info(&req, "ObjectCreated:Copy");
        let input = req.input;
        check_key(&input.key)?;
        let CopySource::Bucket {
            bucket: src_bucket,
            key: src_key,
            ..
        } = &input.copy_source
        else {
            return Err(err(
                S3ErrorCode::NotImplemented,
                "Access points are not supported",
            ));
        };
        let (sb, sk) = (src_bucket.to_string(), src_key.to_string());
        let src = self.blocking(move |s| s.require_object(&sb, &sk)).await?;
        let replace = input
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if **src_bucket == input.bucket && **src_key == input.key && !replace {
            return Err(err(
                S3ErrorCode::InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes.",
            ));
        }
        self.require_bucket(&input.bucket).await?;
        let attrs = if replace {
            attrs_of(
                input.content_type,
                input.content_encoding,
                input.content_disposition,
                input.content_language,
                input.cache_control,
                input.metadata,
            )
        } else {
            src.attrs.clone()
        };
        let from = self.store.body_path(&src.file);
        let w = self
            .blocking(move |s| copy_to_temp(s, &from).map_err(internal))
            .await?;
        let etag = hex::encode(w.md5);
        let meta = self
            .commit(&input.bucket, &input.key, &w, attrs, &event, None)
            .await?;
        Ok(with_ids(
            CopyObjectOutput {
                copy_object_result: Some(CopyObjectResult {
                    e_tag: Some(ETag::Strong(etag)),
                    last_modified: Some(timestamp(meta.last_modified_ms)),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &event.request_id,
            &event.host_id,
        ))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let event = self.event_info(&req, "ObjectRemoved:Delete");
        let (b, k) = (req.input.bucket, req.input.key);
        let e = event.clone();
        let pending = self
            .blocking(move |s| {
                let (unlink, pending) = s.delete_object(&b, &k, &e)?;
                s.remove_bodies(&unlink);
                Ok(pending)
            })
            .await?;
        self.notify(pending);
        Ok(with_ids(
            DeleteObjectOutput::default(),
            &event.request_id,
            &event.host_id,
        ))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let event = self.event_info(&req, "ObjectRemoved:Delete");
        let input = req.input;
        if input.delete.objects.len() > 1000 {
            return Err(err(
                S3ErrorCode::MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema",
            ));
        }
        self.require_bucket(&input.bucket).await?;
        let quiet = input.delete.quiet.unwrap_or(false);
        let keys: Vec<String> = input.delete.objects.into_iter().map(|o| o.key).collect();
        let b = input.bucket.clone();
        let e = event.clone();
        let (deleted, pending) = self
            .blocking(move |s| {
                let mut all = Vec::new();
                let mut deleted = Vec::new();
                for key in keys {
                    let (unlink, pending) = s.delete_object(&b, &key, &e)?;
                    s.remove_bodies(&unlink);
                    all.extend(pending);
                    deleted.push(key);
                }
                Ok((deleted, all))
            })
            .await?;
        self.notify(pending);
        let deleted: Vec<DeletedObject> = deleted
            .into_iter()
            .map(|k| DeletedObject {
                key: Some(k),
                ..Default::default()
            })
            .collect();
        Ok(with_ids(
            DeleteObjectsOutput {
                deleted: (!quiet).then_some(deleted),
                ..Default::default()
            },
            &event.request_id,
            &event.host_id,
        ))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().unwrap_or_default();
        let after = match (&input.continuation_token, &input.start_after) {
            (Some(t), _) => token_to_after(t)?,
            (None, Some(s)) => s.clone(),
            (None, None) => String::new(),
        };
        let page = self
            .list(&input.bucket, &prefix, &delimiter, &after, max)
            .await?;
        let encode = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if encode { url_encode(&s) } else { s };
        let key_count = i32::try_from(page.len()).unwrap_or(i32::MAX);
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(prefix)),
            delimiter: input.delimiter.map(enc),
            start_after: input.start_after.map(enc),
            encoding_type: input.encoding_type,
            max_keys: Some(i32::try_from(max).unwrap_or(1000)),
            key_count: Some(key_count),
            is_truncated: Some(page.truncated),
            continuation_token: input.continuation_token,
            next_continuation_token: page.truncated.then(|| hex::encode(page.resume.as_bytes())),
            contents: Some(page.contents(encode)),
            common_prefixes: page.common_prefixes(encode),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let max = max_keys(input.max_keys)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().unwrap_or_default();
        let mut after = input.marker.clone().unwrap_or_default();
        if !delimiter.is_empty() && after.ends_with(&delimiter) {
            // A NextMarker that is a common prefix: go on after its keys.
            after.push('\u{10FFFF}');
        }
        let page = self
            .list(&input.bucket, &prefix, &delimiter, &after, max)
            .await?;
        let encode = input
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if encode { url_encode(&s) } else { s };
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(prefix)),
            delimiter: input.delimiter.map(enc),
            marker: Some(enc(input.marker.clone().unwrap_or_default())),
            encoding_type: input.encoding_type,
            max_keys: Some(i32::try_from(max).unwrap_or(1000)),
            is_truncated: Some(page.truncated),
            next_marker: page.truncated.then(|| enc(page.last.clone())),
            contents: Some(page.contents(encode)),
            common_prefixes: page.common_prefixes(encode),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        check_key(&input.key)?;
        let attrs = attrs_of(
            input.content_type,
            input.content_encoding,
            input.content_disposition,
            input.content_language,
            input.cache_control,
            input.metadata,
        );
        let (b, k) = (input.bucket.clone(), input.key.clone());
        let id = self
            .blocking(move |s| s.create_upload(&b, &k, &attrs))
            .await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        mut req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let checks = Checksums::of(&req.headers, req.trailing_headers.take());
        let input = req.input;
        if !(1..=10_000).contains(&input.part_number) {
            return Err(err(
                S3ErrorCode::InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive",
            ));
        }
        let (id, b, k) = (
            input.upload_id.clone(),
            input.bucket.clone(),
            input.key.clone(),
        );
        self.blocking(move |s| s.upload(&id, &b, &k)).await?;
        let (w, sums) = self.write_temp(input.body, MAX_PUT, checks).await?;
        let temp = w.temp.clone();
        let file = match self
            .blocking(move |s| s.install(&temp).map_err(internal))
            .await
        {
            Ok(f) => f,
            Err(e) => {
                let _ = tokio::fs::remove_file(&w.temp).await;
                return Err(e);
            }
        };
        let part = PartMeta {
            number: input.part_number,
            file: file.clone(),
            size: w.size,
            etag: hex::encode(w.md5),
            last_modified_ms: now_ms(),
        };
        let etag = part.etag.clone();
        let id = input.upload_id;
        self.blocking(move |s| match s.put_part(&id, &part) {
            Ok(old) => {
                s.remove_bodies(&old);
                Ok(())
            }
            Err(e) => {
                s.remove_bodies(&[file]);
                Err(e)
            }
        })
        .await?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(etag)),
            checksum_crc32: sums.checksum_crc32,
            checksum_crc32c: sums.checksum_crc32c,
            checksum_sha1: sums.checksum_sha1,
            checksum_sha256: sums.checksum_sha256,
            checksum_crc64nvme: sums.checksum_crc64nvme,
            ..Default::default()
        }))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let (id, b, k) = (
            input.upload_id.clone(),
            input.bucket.clone(),
            input.key.clone(),
        );
        let parts = self
            .blocking(move |s| {
                s.upload(&id, &b, &k)?;
                s.parts(&id)
            })
            .await?;
        let marker = input.part_number_marker.unwrap_or(0);
        let max = usize::try_from(input.max_parts.unwrap_or(1000).clamp(0, 1000)).unwrap_or(1000);
        let rest: Vec<&PartMeta> = parts.iter().filter(|p| p.number > marker).collect();
        let page: Vec<&PartMeta> = rest.iter().take(max).copied().collect();
        let truncated = rest.len() > page.len();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            max_parts: i32::try_from(max).ok(),
            is_truncated: Some(truncated),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: page.last().map(|p| p.number),
            parts: Some(
                page.iter()
                    .map(|p| Part {
                        part_number: Some(p.number),
                        e_tag: Some(ETag::Strong(p.etag.clone())),
                        size: i64::try_from(p.size).ok(),
                        last_modified: Some(timestamp(p.last_modified_ms)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let event = self.event_info(&req, "ObjectCreated:CompleteMultipartUpload");
        let input = req.input;
        let (id, b, k) = (
            input.upload_id.clone(),
            input.bucket.clone(),
            input.key.clone(),
        );
        let (upload, stored) = self
            .blocking(move |s| {
                let u = s.upload(&id, &b, &k)?;
                Ok((u, s.parts(&id)?))
            })
            .await?;
        let given: Vec<CompletedPart> = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        if given.is_empty() {
            return Err(err(
                S3ErrorCode::MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema",
            ));
        }
        let invalid_part = || {
            err(
                S3ErrorCode::InvalidPart,
                "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
            )
        };
        let mut chosen: Vec<PartMeta> = Vec::new();
        for g in &given {
            let n = g.part_number.ok_or_else(invalid_part)?;
            if chosen.last().is_some_and(|p| p.number >= n) {
                return Err(err(
                    S3ErrorCode::InvalidPartOrder,
                    "The list of parts was not in ascending order. Parts must be ordered by part number.",
                ));
            }
            let part = stored
                .iter()
                .find(|p| p.number == n)
                .ok_or_else(invalid_part)?;
            if let Some(tag) = &g.e_tag
                && tag.value().trim_matches('"') != part.etag
            {
                return Err(invalid_part());
            }
            chosen.push(part.clone());
        }
        // Sizes last: S3 reports a bad list before a small part.
        if chosen[..chosen.len() - 1].iter().any(|p| p.size < MIN_PART) {
            return Err(err(
                S3ErrorCode::EntityTooSmall,
                "Your proposed upload is smaller than the minimum allowed object size.",
            ));
        }
        let mut md5s = Md5::new();
        for p in &chosen {
            md5s.update(&hex::decode(&p.etag).map_err(internal)?);
        }
        let etag = format!("{}-{}", hex::encode(md5s.finalize()), chosen.len());
        let files: Vec<PathBuf> = chosen
            .iter()
            .map(|p| self.store.body_path(&p.file))
            .collect();
        let mut w = self
            .blocking(move |s| concat_to_temp(s, &files).map_err(internal))
            .await?;
        w.etag = etag.clone();
        self.commit(
            &input.bucket,
            &input.key,
            &w,
            upload.attrs,
            &event,
            Some(input.upload_id),
        )
        .await?;
        Ok(with_ids(
            CompleteMultipartUploadOutput {
                bucket: Some(input.bucket.clone()),
                key: Some(input.key.clone()),
                e_tag: Some(ETag::Strong(etag)),
                location: Some(format!("/{}/{}", input.bucket, input.key)),
                ..Default::default()
            },
            &event.request_id,
            &event.host_id,
        ))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        self.blocking(move |s| {
            s.upload(&input.upload_id, &input.bucket, &input.key)?;
            let files = s.abort_upload(&input.upload_id)?;
            s.remove_bodies(&files);
            Ok(())
        })
        .await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn put_bucket_notification_configuration(
        &self,
        req: S3Request<PutBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketNotificationConfigurationOutput>> {
        let input = req.input;
        self.require_bucket(&input.bucket).await?;
        let targets = notify::parse_configuration(&input.notification_configuration)?;
        let bucket_arn = format!("arn:aws:s3:::{}", input.bucket);
        let skip = input.skip_destination_validation.unwrap_or(false);
        for t in &targets {
            if !skip
                && !self
                    .sink
                    .can_deliver(&t.function_arn, &bucket_arn, &self.settings.account_id)
                    .await
            {
                return Err(err(
                    S3ErrorCode::InvalidArgument,
                    "Unable to validate the following destination configurations",
                ));
            }
        }
        let b = input.bucket;
        self.blocking(move |s| s.set_notification(&b, &targets))
            .await?;
        Ok(S3Response::new(PutBucketNotificationConfigurationOutput {}))
    }

    async fn get_bucket_notification_configuration(
        &self,
        req: S3Request<GetBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketNotificationConfigurationOutput>> {
        let b = req.input.bucket;
        let targets = self.blocking(move |s| s.notification(&b)).await?;
        let conf = notify::to_configuration(&targets);
        Ok(S3Response::new(GetBucketNotificationConfigurationOutput {
            lambda_function_configurations: conf.lambda_function_configurations,
            ..Default::default()
        }))
    }
}

/// Concatenates part bodies into a new fsynced temporary file.
fn concat_to_temp(store: &ObjectStore, parts: &[PathBuf]) -> std::io::Result<Written> {
    use std::io::Write;
    let temp = store.temp_path();
    let mut dst = std::fs::File::create(&temp)?;
    let mut size = 0u64;
    for p in parts {
        let mut src = std::fs::File::open(p)?;
        size += std::io::copy(&mut src, &mut dst)?;
    }
    dst.flush()?;
    dst.sync_all()?;
    Ok(Written {
        temp,
        size,
        md5: [0; 16],
        etag: String::new(),
    })
}
