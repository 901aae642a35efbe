//! The object store driven by the official AWS SDK for Rust (`aws-sdk-s3`,
//! its default CRC32 checksums and aws-chunked bodies on) against a real
//! `nimbus serve`.

// Shared with tests.rs, which uses the helpers this file does not.
#[allow(dead_code)]
mod support;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use http_body_util::{BodyExt, Full};
use support::Server;

#[tokio::test(flavor = "multi_thread")]
async fn objects_round_trip_through_aws_sdk_s3() {
    let server = Server::start().await;
    let s3 = server.s3();
    s3.create_bucket()
        .bucket("sdk-bucket")
        .send()
        .await
        .unwrap();
    let listed = s3.list_buckets().send().await.unwrap();
    assert!(
        listed
            .buckets()
            .iter()
            .any(|b| b.name() == Some("sdk-bucket"))
    );

    let put = s3
        .put_object()
        .bucket("sdk-bucket")
        .key("hello.txt")
        .body(ByteStream::from_static(b"hello world"))
        .content_type("text/plain")
        .metadata("colour", "blue")
        .send()
        .await
        .unwrap();
    // MD5("hello world")
    assert_eq!(put.e_tag(), Some("\"5eb63bbbe01eeed093cb22bb8f5acdc3\""));

    let got = s3
        .get_object()
        .bucket("sdk-bucket")
        .key("hello.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("text/plain"));
    assert_eq!(
        got.metadata()
            .and_then(|m| m.get("colour"))
            .map(String::as_str),
        Some("blue")
    );
    let body = got.body.collect().await.unwrap().into_bytes();
    assert_eq!(&body[..], b"hello world");

    let range = s3
        .get_object()
        .bucket("sdk-bucket")
        .key("hello.txt")
        .range("bytes=6-")
        .send()
        .await
        .unwrap();
    assert_eq!(range.content_range(), Some("bytes 6-10/11"));
    assert_eq!(
        &range.body.collect().await.unwrap().into_bytes()[..],
        b"world"
    );

    for i in 0..5 {
        s3.put_object()
            .bucket("sdk-bucket")
            .key(format!("dir/{i}"))
            .body(ByteStream::from(vec![b'x'; i]))
            .send()
            .await
            .unwrap();
    }
    let mut pages = s3
        .list_objects_v2()
        .bucket("sdk-bucket")
        .prefix("dir/")
        .max_keys(2)
        .into_paginator()
        .send();
    let mut keys = Vec::new();
    while let Some(page) = pages.next().await {
        keys.extend(
            page.unwrap()
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
    }
    assert_eq!(keys, ["dir/0", "dir/1", "dir/2", "dir/3", "dir/4"]);

    let missing = s3
        .get_object()
        .bucket("sdk-bucket")
        .key("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(missing.into_service_error().code(), Some("NoSuchKey"));

    let objects: Vec<ObjectIdentifier> = keys
        .iter()
        .map(|k| ObjectIdentifier::builder().key(k).build().unwrap())
        .collect();
    let deleted = s3
        .delete_objects()
        .bucket("sdk-bucket")
        .delete(
            Delete::builder()
                .set_objects(Some(objects))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.deleted().len(), 5);
    let left = s3
        .list_objects_v2()
        .bucket("sdk-bucket")
        .send()
        .await
        .unwrap();
    assert_eq!(left.key_count(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_upload_and_presigned_put() {
    let server = Server::start().await;
    let s3 = server.s3();
    s3.create_bucket().bucket("parts").send().await.unwrap();
    let upload = s3
        .create_multipart_upload()
        .bucket("parts")
        .key("big")
        .send()
        .await
        .unwrap();
    let id = upload.upload_id().unwrap();
    let first = vec![7u8; 5 * 1024 * 1024];
    let mut parts = Vec::new();
    for (n, data) in [(1, first.clone()), (2, b"end".to_vec())] {
        let out = s3
            .upload_part()
            .bucket("parts")
            .key("big")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(data))
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().unwrap())
                .build(),
        );
    }
    let done = s3
        .complete_multipart_upload()
        .bucket("parts")
        .key("big")
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(
        done.e_tag().unwrap().ends_with("-2\""),
        "{:?}",
        done.e_tag()
    );
    let head = s3
        .head_object()
        .bucket("parts")
        .key("big")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(5 * 1024 * 1024 + 3));

    // A presigned PUT, sent by a plain HTTP client.
    let presigned = s3
        .put_object()
        .bucket("parts")
        .key("by-url")
        .presigned(PresigningConfig::expires_in(std::time::Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    let mut req = http::Request::builder().method("PUT").uri(presigned.uri());
    for (k, v) in presigned.headers() {
        req = req.header(k, v);
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let resp = client
        .request(
            req.body(Full::new(bytes::Bytes::from_static(b"via url")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let got = s3
        .get_object()
        .bucket("parts")
        .key("by-url")
        .send()
        .await
        .unwrap();
    assert_eq!(
        &got.body.collect().await.unwrap().into_bytes()[..],
        b"via url"
    );

    // A wrong secret is refused with S3's error.
    let bad = aws_sdk_s3::Client::from_conf(
        s3.config()
            .to_builder()
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                support::ROOT_KEYS.0,
                "wrong",
                None,
                None,
                "test",
            ))
            .build(),
    );
    let err = bad.list_buckets().send().await.unwrap_err();
    assert_eq!(
        err.into_service_error().code(),
        Some("SignatureDoesNotMatch")
    );
    let _ = resp.into_body().collect().await;
}
