"""The S3-compatible object store through boto3 (its default CRC checksums
and aws-chunked bodies on), the AWS CLI (`aws s3`, `aws s3api`) and plain
urllib for presigned URLs: buckets, objects, ranges, copies, listings,
multipart uploads, virtual-hosted addressing, errors, IAM, and bucket
notifications that invoke a function with the event S3 sends."""

import base64
import hashlib
import io
import json
import os
import socket
import sqlite3
import time
import urllib.parse
import urllib.request
import zlib

import boto3
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import (ACCESS_KEY, PY_RUNTIME, REGION, SECRET_KEY, error_code, py_zip, run_nimbus,
                      unique, wait_for)

ACCOUNT = "000000000000"
LAMBDA_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
MB = 1024 * 1024


def s3_client(server, key=ACCESS_KEY, secret=SECRET_KEY, token=None, endpoint=None, **config):
    cfg = {"retries": {"total_max_attempts": 1}}
    cfg.update(config)
    return boto3.client("s3", endpoint_url=endpoint or server.url, region_name=REGION, aws_access_key_id=key,
                        aws_secret_access_key=secret, aws_session_token=token,
                        config=Config(**cfg))


@pytest.fixture(scope="module")
def s3(server):
    return s3_client(server)


@pytest.fixture
def bucket(s3):
    name = unique("bkt")
    s3.create_bucket(Bucket=name)
    yield name
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=name, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=name)
    except ClientError:
        pass


def md5(data):
    return hashlib.md5(data).hexdigest()


def multipart_etag(parts):
    digest = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f'"{digest}-{len(parts)}"'


def test_buckets_and_objects_round_trip_with_boto3(s3, bucket):
    assert bucket in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    s3.head_bucket(Bucket=bucket)
    body = os.urandom(100_000)
    put = s3.put_object(Bucket=bucket, Key="docs/report 2024.bin", Body=body,
                        ContentType="application/x-report", Metadata={"Owner": "alice", "x": "1"},
                        CacheControl="max-age=60", ContentDisposition="attachment")
    assert put["ETag"] == f'"{md5(body)}"', "the ETag of a single PUT is the body's MD5"
    got = s3.get_object(Bucket=bucket, Key="docs/report 2024.bin")
    assert got["Body"].read() == body
    assert got["ETag"] == put["ETag"]
    assert got["ContentType"] == "application/x-report"
    assert got["Metadata"] == {"owner": "alice", "x": "1"}
    assert got["CacheControl"] == "max-age=60"
    assert got["ContentDisposition"] == "attachment"
    assert got["ContentLength"] == len(body)
    head = s3.head_object(Bucket=bucket, Key="docs/report 2024.bin")
    assert head["ContentLength"] == len(body) and head["ETag"] == put["ETag"]
    assert head["Metadata"] == {"owner": "alice", "x": "1"}

    part = s3.get_object(Bucket=bucket, Key="docs/report 2024.bin", Range="bytes=1000-1999")
    assert part["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert part["ContentRange"] == f"bytes 1000-1999/{len(body)}"
    assert part["Body"].read() == body[1000:2000]
    tail = s3.get_object(Bucket=bucket, Key="docs/report 2024.bin", Range="bytes=-10")
    assert tail["Body"].read() == body[-10:]
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="docs/report 2024.bin", Range=f"bytes={len(body)}-")
    assert error_code(e) == "InvalidRange"

    # Without a Content-Type, S3 answers binary/octet-stream; empty bodies are objects too.
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    empty = s3.get_object(Bucket=bucket, Key="empty")
    assert empty["Body"].read() == b"" and empty["ETag"] == f'"{md5(b"")}"'
    assert empty["ContentType"] == "binary/octet-stream"

    # An overwrite replaces the object whole.
    s3.put_object(Bucket=bucket, Key="empty", Body=b"now full")
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b"now full"

    s3.delete_object(Bucket=bucket, Key="empty")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=bucket, Key="empty")
    assert error_code(e) == "NoSuchKey"
    s3.delete_object(Bucket=bucket, Key="empty")  # deleting a missing key succeeds, as in S3


def test_errors_are_s3_errors(s3, bucket):
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=unique("missing"), Key="k")
    assert error_code(e) == "NoSuchBucket"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="nope")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket=bucket)
    assert error_code(e) == "BucketAlreadyOwnedByYou"
    with pytest.raises(ClientError) as e:
        s3.create_bucket(Bucket="Not_A_Valid_Bucket")
    assert error_code(e) == "InvalidBucketName"
    s3.put_object(Bucket=bucket, Key="keep", Body=b"1")
    with pytest.raises(ClientError) as e:
        s3.delete_bucket(Bucket=bucket)
    assert error_code(e) == "BucketNotEmpty"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="md5", Body=b"data", ContentMD5="1B2M2Y8AsgTpgAmY7PhCfg==")
    assert error_code(e) == "BadDigest"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket=bucket, Key="md5", Body=b"data", ChecksumCRC32="AAAAAA==")
    assert error_code(e) == "BadDigest", "a CRC32 that does not match the body"
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="md5")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404, "a bad upload stores nothing"
    # boto3's default: a CRC32 trailer after an aws-chunked body, checked.
    put = s3.put_object(Bucket=bucket, Key="crc", Body=b"checked")
    assert put["ChecksumCRC32"] == base64.b64encode(zlib.crc32(b"checked").to_bytes(4, "big")).decode()


def test_signatures_keys_and_session_tokens_are_checked(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="secret", Body=b"s")
    forged = s3_client(server, secret="not-the-secret")
    for call in (lambda: forged.list_buckets(),
                 lambda: forged.get_object(Bucket=bucket, Key="secret"),
                 lambda: forged.put_object(Bucket=bucket, Key="x", Body=b"x" * 10000)):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "SignatureDoesNotMatch"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError) as e:
        s3_client(server, key="AKIDUNKNOWN").list_buckets()
    assert error_code(e) == "InvalidAccessKeyId"
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="x")

    # Temporary credentials work with their token, and only with it.
    iam, sts = server.client("iam"), server.client("sts")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"}, "Action": "sts:AssumeRole"}]}
    role = iam.create_role(RoleName=unique("s3reader"), AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    iam.put_role_policy(RoleName=role["RoleName"], PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    creds = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="tester")["Credentials"]
    ok = s3_client(server, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
    assert ok.get_object(Bucket=bucket, Key="secret")["Body"].read() == b"s"
    with pytest.raises(ClientError) as e:
        s3_client(server, creds["AccessKeyId"], creds["SecretAccessKey"],
                  "forged-token").get_object(Bucket=bucket, Key="secret")
    assert error_code(e) in ("InvalidToken", "AccessDenied")
    with pytest.raises(ClientError) as e:
        s3_client(server, creds["AccessKeyId"], creds["SecretAccessKey"]).get_object(
            Bucket=bucket, Key="secret")
    assert error_code(e) == "InvalidAccessKeyId"


def test_iam_policies_decide_what_a_user_may_do(server, s3, bucket):
    other = unique("other")
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=bucket, Key="in/a.txt", Body=b"a")
    iam = server.client("iam")
    user = unique("reader")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="read-one", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    reader = s3_client(server, key["AccessKeyId"], key["SecretAccessKey"])
    assert reader.get_object(Bucket=bucket, Key="in/a.txt")["Body"].read() == b"a"
    for call in (lambda: reader.put_object(Bucket=bucket, Key="in/b.txt", Body=b"b"),
                 lambda: reader.put_object(Bucket=other, Key="b.txt", Body=b"b"),
                 lambda: reader.delete_object(Bucket=bucket, Key="in/a.txt"),
                 lambda: reader.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "in/a.txt"}]}),
                 lambda: reader.list_objects_v2(Bucket=bucket),
                 lambda: reader.list_buckets(),
                 lambda: reader.create_bucket(Bucket=unique("nope")),
                 lambda: reader.copy_object(Bucket=other, Key="c", CopySource={"Bucket": bucket, "Key": "in/a.txt"})):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "AccessDenied", e.value.response
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert s3.get_object(Bucket=bucket, Key="in/a.txt")["Body"].read() == b"a", "nothing was deleted"
    # A refused PUT is answered before its body is sent (botocore waits
    # for `100 Continue`); the connection must still serve the next call.
    for i in range(50):
        with pytest.raises(ClientError) as e:
            reader.put_object(Bucket=bucket, Key=f"in/{i}", Body=b"x" * 100)
        assert error_code(e) == "AccessDenied"
        assert reader.get_object(Bucket=bucket, Key="in/a.txt")["Body"].read() == b"a", i
    s3.delete_bucket(Bucket=other)


def test_listing_with_prefix_delimiter_and_paging(s3, bucket):
    keys = ["a.txt", "photos/2024/jan/1.jpg", "photos/2024/feb/2.jpg", "photos/2025/3.jpg",
            "photos/cover.jpg", "notes/with space.txt", "notes/ünïcode.txt", "z+plus=eq.txt"]
    for k in keys:
        s3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    everything = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in everything["Contents"]] == sorted(keys, key=lambda k: k.encode())
    assert everything["KeyCount"] == len(keys) and not everything["IsTruncated"]
    assert all(o["ETag"] == f'"{md5(o["Key"].encode())}"' and o["Size"] == len(o["Key"].encode())
               for o in everything["Contents"])

    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["notes/", "photos/"]
    assert [o["Key"] for o in top["Contents"]] == ["a.txt", "z+plus=eq.txt"]
    photos = s3.list_objects_v2(Bucket=bucket, Prefix="photos/", Delimiter="/")
    assert [p["Prefix"] for p in photos["CommonPrefixes"]] == ["photos/2024/", "photos/2025/"]
    assert [o["Key"] for o in photos["Contents"]] == ["photos/cover.jpg"]

    seen, token, pages = [], None, 0
    while True:
        args = {"Bucket": bucket, "MaxKeys": 3}
        if token:
            args["ContinuationToken"] = token
        page = s3.list_objects_v2(**args)
        pages += 1
        seen += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == [o["Key"] for o in everything["Contents"]] and pages == 3
    paginated = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 2}) for o in p.get("Contents", [])]
    assert paginated == seen
    # Paging through common prefixes lists each once.
    grouped = [(p.get("CommonPrefixes", []), p.get("Contents", [])) for p in s3.get_paginator(
        "list_objects_v2").paginate(Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 1})]
    assert [x["Prefix"] for cps, _ in grouped for x in cps] == ["notes/", "photos/"]
    assert [x["Key"] for _, objs in grouped for x in objs] == ["a.txt", "z+plus=eq.txt"]
    v1_prefixes, marker = [], None
    while True:
        args = {"Bucket": bucket, "Delimiter": "/", "MaxKeys": 1, **({"Marker": marker} if marker else {})}
        page = s3.list_objects(**args)
        v1_prefixes += [x["Prefix"] for x in page.get("CommonPrefixes", [])]
        v1_prefixes += [x["Key"] for x in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        marker = page["NextMarker"]
    assert v1_prefixes == ["a.txt", "notes/", "photos/", "z+plus=eq.txt"]
    after = s3.list_objects_v2(Bucket=bucket, StartAfter="photos/")
    assert [o["Key"] for o in after["Contents"]][0] == "photos/2024/feb/2.jpg"

    v1 = s3.list_objects(Bucket=bucket, Prefix="photos/", MaxKeys=2)
    assert [o["Key"] for o in v1["Contents"]] == ["photos/2024/feb/2.jpg", "photos/2024/jan/1.jpg"]
    assert v1["IsTruncated"]
    v1b = s3.list_objects(Bucket=bucket, Prefix="photos/", Marker=v1["NextMarker"])
    assert [o["Key"] for o in v1b["Contents"]] == ["photos/2025/3.jpg", "photos/cover.jpg"]


def test_copy_and_batch_delete(s3, bucket):
    s3.put_object(Bucket=bucket, Key="src", Body=b"original", ContentType="text/plain",
                  Metadata={"k": "v"})
    out = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert out["CopyObjectResult"]["ETag"] == f'"{md5(b"original")}"'
    dst = s3.get_object(Bucket=bucket, Key="dst")
    assert dst["Body"].read() == b"original"
    assert dst["ContentType"] == "text/plain" and dst["Metadata"] == {"k": "v"}
    s3.copy_object(Bucket=bucket, Key="dst2", CopySource=f"{bucket}/src", MetadataDirective="REPLACE",
                   ContentType="text/html", Metadata={"new": "1"})
    dst2 = s3.head_object(Bucket=bucket, Key="dst2")
    assert dst2["ContentType"] == "text/html" and dst2["Metadata"] == {"new": "1"}
    with pytest.raises(ClientError) as e:
        s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "missing"})
    assert error_code(e) == "NoSuchKey"

    deleted = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "src"}, {"Key": "dst"}, {"Key": "never-existed"}]})
    assert sorted(d["Key"] for d in deleted["Deleted"]) == ["dst", "never-existed", "src"]
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["dst2"]


def test_multipart_uploads(s3, bucket):
    # boto3's managed transfer, forced into parts.
    data = os.urandom(11 * MB + 123)
    s3.upload_fileobj(io.BytesIO(data), bucket, "big.bin",
                      Config=TransferConfig(multipart_threshold=5 * MB, multipart_chunksize=5 * MB))
    head = s3.head_object(Bucket=bucket, Key="big.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == multipart_etag([data[:5 * MB], data[5 * MB:10 * MB], data[10 * MB:]])
    assert s3.get_object(Bucket=bucket, Key="big.bin", Range="bytes=5242878-5242881")["Body"].read() \
        == data[5 * MB - 2:5 * MB + 2]

    # The low-level calls.
    up = s3.create_multipart_upload(Bucket=bucket, Key="manual", ContentType="video/mp4",
                                    Metadata={"m": "1"})["UploadId"]
    p1, p2 = os.urandom(5 * MB), b"tail"
    e2 = s3.upload_part(Bucket=bucket, Key="manual", UploadId=up, PartNumber=2, Body=p2)["ETag"]
    e1 = s3.upload_part(Bucket=bucket, Key="manual", UploadId=up, PartNumber=1, Body=p1)["ETag"]
    assert e1 == f'"{md5(p1)}"'
    listed = s3.list_parts(Bucket=bucket, Key="manual", UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["Size"], p["ETag"]) for p in listed] == [(1, len(p1), e1), (2, 4, e2)]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="manual", UploadId=up, MultipartUpload={
            "Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]})
    assert error_code(e) == "InvalidPartOrder"
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="manual", UploadId=up, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": e2}, {"PartNumber": 2, "ETag": e2}]})
    assert error_code(e) == "InvalidPart"
    done = s3.complete_multipart_upload(Bucket=bucket, Key="manual", UploadId=up, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
    assert done["ETag"] == multipart_etag([p1, p2])
    got = s3.get_object(Bucket=bucket, Key="manual")
    assert got["Body"].read() == p1 + p2
    assert got["ContentType"] == "video/mp4" and got["Metadata"] == {"m": "1"}
    with pytest.raises(ClientError) as e:
        s3.list_parts(Bucket=bucket, Key="manual", UploadId=up)
    assert error_code(e) == "NoSuchUpload", "a completed upload is gone"

    small = s3.create_multipart_upload(Bucket=bucket, Key="small")["UploadId"]
    a = s3.upload_part(Bucket=bucket, Key="small", UploadId=small, PartNumber=1, Body=b"a")["ETag"]
    b = s3.upload_part(Bucket=bucket, Key="small", UploadId=small, PartNumber=2, Body=b"b")["ETag"]
    with pytest.raises(ClientError) as e:
        s3.complete_multipart_upload(Bucket=bucket, Key="small", UploadId=small, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": a}, {"PartNumber": 2, "ETag": b}]})
    assert error_code(e) == "EntityTooSmall"
    s3.abort_multipart_upload(Bucket=bucket, Key="small", UploadId=small)
    with pytest.raises(ClientError) as e:
        s3.upload_part(Bucket=bucket, Key="small", UploadId=small, PartNumber=3, Body=b"c")
    assert error_code(e) == "NoSuchUpload"
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket=bucket, Key="small")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_the_aws_cli(cli, s3, bucket, tmp_path):
    big = tmp_path / "big.bin"
    data = os.urandom(9 * MB + 7)  # above `aws s3 cp`'s 8 MB multipart threshold
    big.write_bytes(data)
    cli.run("s3", "cp", str(big), f"s3://{bucket}/up/big.bin")
    head = s3.head_object(Bucket=bucket, Key="up/big.bin")
    assert head["ContentLength"] == len(data) and head["ETag"].endswith('-2"'), head["ETag"]
    back = tmp_path / "back.bin"
    cli.run("s3", "cp", f"s3://{bucket}/up/big.bin", str(back))
    assert back.read_bytes() == data

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "one.txt").write_text("one")
    (tree / "sub" / "two words.txt").write_text("two")
    cli.run("s3", "sync", str(tree), f"s3://{bucket}/tree")
    listing = cli.run("s3", "ls", f"s3://{bucket}/tree/", "--recursive").stdout
    assert "tree/one.txt" in listing and "tree/sub/two words.txt" in listing
    top = cli.run("s3", "ls", f"s3://{bucket}/").stdout
    assert "PRE tree/" in top and "PRE up/" in top
    assert bucket in cli.run("s3", "ls").stdout
    again = cli.run("s3", "sync", str(tree), f"s3://{bucket}/tree").stdout
    assert again.strip() == "", f"nothing changed, nothing to upload: {again}"
    down = tmp_path / "down"
    cli.run("s3", "sync", f"s3://{bucket}/tree", str(down))
    assert (down / "sub" / "two words.txt").read_text() == "two"

    cli.run("s3api", "put-object", "--bucket", bucket, "--key", "api.json", "--body", str(tree / "one.txt"),
            "--content-type", "application/json")
    meta = cli.json("s3api", "head-object", "--bucket", bucket, "--key", "api.json")
    assert meta["ContentType"] == "application/json" and meta["ContentLength"] == 3
    listed = cli.json("s3api", "list-objects-v2", "--bucket", bucket, "--prefix", "tree/")
    assert [o["Key"] for o in listed["Contents"]] == ["tree/one.txt", "tree/sub/two words.txt"]

    cli.run("s3", "rm", f"s3://{bucket}/tree", "--recursive")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="tree/")
    name = unique("clibkt")
    cli.run("s3", "mb", f"s3://{name}")
    cli.run("s3", "rb", f"s3://{name}")
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_presigned_urls(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="shared file.txt", Body=b"shared")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "shared file.txt"},
                                    ExpiresIn=300)
    with urllib.request.urlopen(url) as r:
        assert r.read() == b"shared"
    v4 = s3_client(server, signature_version="s3v4")
    url = v4.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "shared file.txt"})
    assert "X-Amz-Credential" in url
    with urllib.request.urlopen(url) as r:
        assert r.read() == b"shared"
    put_url = v4.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "via-url"})
    req = urllib.request.Request(put_url, data=b"uploaded with a URL", method="PUT")
    with urllib.request.urlopen(req) as r:
        assert r.status == 200
    assert s3.get_object(Bucket=bucket, Key="via-url")["Body"].read() == b"uploaded with a URL"

    tampered = url.replace("shared%20file.txt", "via-url")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(tampered)
    assert e.value.code == 403 and b"SignatureDoesNotMatch" in e.value.read()
    expired = v4.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "via-url"},
                                        ExpiresIn=1)
    time.sleep(2)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(expired)
    assert e.value.code == 403


@pytest.fixture
def localhost_subdomains(monkeypatch):
    """`*.localhost` resolves to the loopback (RFC 6761; systemd-resolved
    does it, this machine's resolver may not)."""
    real = socket.getaddrinfo

    def resolve(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".localhost"):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)


def test_virtual_hosted_style_addressing(server, s3, bucket, localhost_subdomains):
    port = urllib.parse.urlsplit(server.url).port
    vh = s3_client(server, endpoint=f"http://localhost:{port}", s3={"addressing_style": "virtual"})
    seen = []
    vh.meta.events.register("before-send.s3", lambda request, **kw: seen.append(request.url))
    vh.put_object(Bucket=bucket, Key="vhost/key.txt", Body=b"virtual")
    assert seen[-1].startswith(f"http://{bucket}.localhost:{port}/vhost/key.txt"), seen
    assert vh.get_object(Bucket=bucket, Key="vhost/key.txt")["Body"].read() == b"virtual"
    assert [o["Key"] for o in vh.list_objects_v2(Bucket=bucket)["Contents"]] == ["vhost/key.txt"]
    assert s3.get_object(Bucket=bucket, Key="vhost/key.txt")["Body"].read() == b"virtual"
    vh.delete_object(Bucket=bucket, Key="vhost/key.txt")
    with pytest.raises(ClientError) as e:
        vh.head_bucket(Bucket=unique("absent"))
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_objects_survive_a_restart(own_server):
    srv = own_server()
    s3 = s3_client(srv)
    s3.create_bucket(Bucket="durable")
    s3.put_object(Bucket="durable", Key="k", Body=b"kept", Metadata={"a": "b"})
    assert srv.stop() == 0
    srv.start()
    got = s3_client(srv).get_object(Bucket="durable", Key="k")
    assert got["Body"].read() == b"kept" and got["Metadata"] == {"a": "b"}


# ---------------------------------------------------------------------------
# Bucket notifications
# ---------------------------------------------------------------------------

RECORDER = """import json, os, urllib.parse, boto3
s3 = boto3.client("s3")

def lambda_handler(event, context):
    record = event["Records"][0]
    src = record["s3"]["bucket"]["name"]
    key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
    if record["eventName"].startswith("ObjectCreated"):
        body = s3.get_object(Bucket=src, Key=key)["Body"].read()
    else:
        body = b""
    try:
        s3.put_object(Bucket=src, Key="forbidden/" + key, Body=b"loop")
        write_elsewhere = "allowed"
    except Exception as e:
        write_elsewhere = getattr(e, "response", {}).get("Error", {}).get("Code", repr(e))
    s3.put_object(Bucket=os.environ["OUT"], Key=record["eventName"] + "/" + key,
                  Body=json.dumps({"event": event, "read": len(body), "write_elsewhere": write_elsewhere}))
"""


def test_notification_configuration_round_trip_and_validation(server, s3, bucket, functions, lam):
    fn = functions.python("def lambda_handler(e, c):\n    return None\n")
    arn = fn["FunctionArn"]
    conf = {"LambdaFunctionConfigurations": [{
        "Id": "thumbs", "LambdaFunctionArn": arn, "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "images/"},
                                           {"Name": "suffix", "Value": ".jpg"}]}}}]}
    with pytest.raises(ClientError) as e:
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=conf)
    assert error_code(e) == "InvalidArgument"
    assert "Unable to validate the following destination configurations" in e.value.response["Error"]["Message"]

    lam.add_permission(FunctionName=fn["FunctionName"], StatementId="s3", Action="lambda:InvokeFunction",
                       Principal="s3.amazonaws.com", SourceArn=f"arn:aws:s3:::{bucket}",
                       SourceAccount=ACCOUNT)
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=conf)
    got = s3.get_bucket_notification_configuration(Bucket=bucket)
    assert got["LambdaFunctionConfigurations"] == conf["LambdaFunctionConfigurations"]

    # A PUT replaces the whole configuration; an Id is generated when absent.
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "LambdaFunctionConfigurations": [{"LambdaFunctionArn": arn, "Events": ["s3:ObjectRemoved:*"]}]})
    (only,) = s3.get_bucket_notification_configuration(Bucket=bucket)["LambdaFunctionConfigurations"]
    assert only["Events"] == ["s3:ObjectRemoved:*"] and only["Id"] and "Filter" not in only

    bad = [
        {"LambdaFunctionArn": arn, "Events": ["s3:ObjectCreated:Nope"]},
        {"LambdaFunctionArn": arn, "Events": ["s3:ObjectCreated:*"], "Filter": {"Key": {"FilterRules": [
            {"Name": "prefix", "Value": "a"}, {"Name": "prefix", "Value": "b"}]}}},
    ]
    for c in bad:
        with pytest.raises(ClientError) as e:
            s3.put_bucket_notification_configuration(
                Bucket=bucket, NotificationConfiguration={"LambdaFunctionConfigurations": [c]})
        assert error_code(e) == "InvalidArgument", c
    with pytest.raises(ClientError) as e:
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
            "LambdaFunctionConfigurations": [
                {"LambdaFunctionArn": arn, "Events": ["s3:ObjectCreated:*"]},
                {"LambdaFunctionArn": arn, "Events": ["s3:ObjectCreated:Put"],
                 "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "x/"}]}}}]})
    assert error_code(e) == "InvalidArgument"
    assert "overlap" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
            "LambdaFunctionConfigurations": [{
                "LambdaFunctionArn": arn.replace(fn["FunctionName"], "no-such-function"),
                "Events": ["s3:ObjectCreated:*"]}]})
    assert error_code(e) == "InvalidArgument"

    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={})
    assert "LambdaFunctionConfigurations" not in s3.get_bucket_notification_configuration(Bucket=bucket)


def test_uploads_invoke_a_function_with_the_s3_event(server, s3, bucket, functions, lam):
    out = unique("events")
    s3.create_bucket(Bucket=out)
    iam = server.client("iam")
    role = iam.create_role(RoleName=unique("thumb-role"),
                           AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST))["Role"]
    iam.attach_role_policy(RoleName=role["RoleName"],
                           PolicyArn="arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole")
    iam.put_role_policy(RoleName=role["RoleName"], PolicyName="s3", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"},
            {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{out}/*"}]}))
    fn = functions.python(RECORDER, Role=role["Arn"], Timeout=30, Environment={"Variables": {"OUT": out}})
    lam.add_permission(FunctionName=fn["FunctionName"], StatementId="s3", Action="lambda:InvokeFunction",
                       Principal="s3.amazonaws.com", SourceArn=f"arn:aws:s3:::{bucket}")
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "LambdaFunctionConfigurations": [
            {"Id": "images", "LambdaFunctionArn": fn["FunctionArn"], "Events": ["s3:ObjectCreated:*"],
             "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "uploads/"},
                                                {"Name": "suffix", "Value": ".jpg"}]}}},
            {"Id": "removals", "LambdaFunctionArn": fn["FunctionArn"], "Events": ["s3:ObjectRemoved:Delete"]}]})

    body = b"\xff\xd8 not really a jpeg"
    put = s3.put_object(Bucket=bucket, Key="uploads/my photo+1.jpg", Body=body)
    s3.put_object(Bucket=bucket, Key="uploads/skip.png", Body=b"filtered out by suffix")
    s3.put_object(Bucket=bucket, Key="other/skip.jpg", Body=b"filtered out by prefix")
    s3.copy_object(Bucket=bucket, Key="uploads/copy.jpg", CopySource={"Bucket": bucket, "Key": "uploads/my photo+1.jpg"})

    def recorded(key):
        try:
            return json.loads(s3.get_object(Bucket=out, Key=key)["Body"].read())
        except ClientError:
            return None

    got = wait_for(lambda: recorded("ObjectCreated:Put/uploads/my photo+1.jpg"), timeout=60,
                   what="the function's record of the PUT event")
    (record,) = got["event"]["Records"]
    assert set(record) == {"eventVersion", "eventSource", "awsRegion", "eventTime", "eventName",
                           "userIdentity", "requestParameters", "responseElements", "s3"}
    assert record["eventVersion"] == "2.1" and record["eventSource"] == "aws:s3"
    assert record["awsRegion"] == REGION and record["eventName"] == "ObjectCreated:Put"
    assert record["eventTime"].endswith("Z") and len(record["eventTime"]) == len("2024-01-01T00:00:00.000Z")
    assert record["userIdentity"]["principalId"]
    assert record["requestParameters"]["sourceIPAddress"] == "127.0.0.1"
    assert set(record["responseElements"]) == {"x-amz-request-id", "x-amz-id-2"}
    assert record["responseElements"]["x-amz-request-id"] == put["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    s3part = record["s3"]
    assert s3part["s3SchemaVersion"] == "1.0" and s3part["configurationId"] == "images"
    assert s3part["bucket"] == {"name": bucket, "ownerIdentity": {"principalId": s3part["bucket"]["ownerIdentity"]["principalId"]},
                                "arn": f"arn:aws:s3:::{bucket}"}
    obj = s3part["object"]
    assert obj["key"] == "uploads/my+photo%2B1.jpg", "keys are form-URL-encoded"
    assert obj["size"] == len(body) and obj["eTag"] == md5(body)
    assert int(obj["sequencer"], 16) > 0
    assert got["read"] == len(body), "the function read the object with its role"
    assert got["write_elsewhere"] == "AccessDenied", "its role allows no write into the source bucket"

    copied = wait_for(lambda: recorded("ObjectCreated:Copy/uploads/copy.jpg"), timeout=60,
                      what="the COPY event")
    copy_obj = copied["event"]["Records"][0]["s3"]["object"]
    assert int(copy_obj["sequencer"], 16) > int(obj["sequencer"], 16)

    big = os.urandom(6 * MB)
    s3.upload_fileobj(io.BytesIO(big), bucket, "uploads/big.jpg",
                      Config=TransferConfig(multipart_threshold=5 * MB, multipart_chunksize=5 * MB))
    multipart = wait_for(lambda: recorded("ObjectCreated:CompleteMultipartUpload/uploads/big.jpg"),
                         timeout=60, what="the CompleteMultipartUpload event")
    big_obj = multipart["event"]["Records"][0]["s3"]["object"]
    assert big_obj["size"] == len(big) and multipart["read"] == len(big)
    assert big_obj["eTag"] == multipart_etag([big[:5 * MB], big[5 * MB:]]).strip('"')

    s3.delete_object(Bucket=bucket, Key="uploads/copy.jpg")
    removed = wait_for(lambda: recorded("ObjectRemoved:Delete/uploads/copy.jpg"), timeout=60,
                       what="the DELETE event")
    rec = removed["event"]["Records"][0]
    assert rec["s3"]["configurationId"] == "removals"
    assert set(rec["s3"]["object"]) == {"key", "sequencer"}

    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=out)["Contents"]]
    assert not any("skip" in k for k in listed), listed
    assert "forbidden/uploads/my photo+1.jpg" not in [
        o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=out):
        s3.delete_objects(Bucket=out, Delete={"Objects": [{"Key": o["Key"]} for o in page["Contents"]]})
    s3.delete_bucket(Bucket=out)


LOOPER = """import urllib.parse, boto3
s3 = boto3.client("s3")

def lambda_handler(event, context):
    record = event["Records"][0]
    bucket = record["s3"]["bucket"]["name"]
    key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
    print("LOOP " + key)
    # The mistake the thumbnail tutorial warns of: writing into the bucket
    # that triggers this very function.
    s3.put_object(Bucket=bucket, Key=key + "x", Body=b"again")
"""


def test_a_function_writing_into_its_trigger_bucket_is_stopped(server, s3, bucket, functions, lam):
    """Lambda's recursive loop detection, through S3: the function's boto3
    sends the trace header of its invocation with its PutObject, S3 passes it
    on with the notification, and the 17th run in the chain is not started;
    the event is dead-lettered with the reason."""
    iam = server.client("iam")
    role = iam.create_role(RoleName=unique("looper-role"),
                           AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST))["Role"]
    iam.attach_role_policy(RoleName=role["RoleName"],
                           PolicyArn="arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole")
    iam.put_role_policy(RoleName=role["RoleName"], PolicyName="s3", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],
             "Resource": f"arn:aws:s3:::{bucket}/*"}]}))
    fn = functions.python(LOOPER, Role=role["Arn"], Timeout=30)
    name = fn["FunctionName"]
    lam.add_permission(FunctionName=name, StatementId="s3", Action="lambda:InvokeFunction",
                       Principal="s3.amazonaws.com", SourceArn=f"arn:aws:s3:::{bucket}")
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "LambdaFunctionConfigurations": [
            {"LambdaFunctionArn": fn["FunctionArn"], "Events": ["s3:ObjectCreated:*"]}]})
    s3.put_object(Bucket=bucket, Key="k", Body=b"first")

    def stopped():
        out = json.loads(run_nimbus(server, "dlq", "list", "--json").stdout)["deadLetters"]
        return [d for d in out if d["functionName"] == name]
    (letter,) = wait_for(stopped, timeout=90, what="the loop's dead letter")
    assert letter["condition"] == "RecursiveInvocationDetected", letter
    event = json.loads(letter["payload"])
    assert event["Records"][0]["s3"]["object"]["key"] == "k" + "x" * 16

    logs = server.client("logs")

    def runs():
        events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}",
                                        filterPattern="LOOP")["events"]
        return sorted(e["message"].split()[1] for e in events if e["message"].startswith("LOOP "))
    wait_for(lambda: len(runs()) == 16, timeout=20, what="16 runs in the logs")
    assert runs() == sorted("k" + "x" * i for i in range(16))
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert sorted(keys) == sorted("k" + "x" * i for i in range(17)), "the 17th write stopped nothing else"
    time.sleep(1)
    assert len(runs()) == 16, "nothing ran after the stop"


def test_notifications_left_in_the_outbox_are_delivered_at_start(own_server, tmp_path):
    """At least once: an event committed with its object but not handed to
    Lambda before a crash is delivered when the server starts again."""
    srv = own_server()
    s3, lam = s3_client(srv), srv.client("lambda")
    s3.create_bucket(Bucket="outbox-src")
    s3.create_bucket(Bucket="outbox-dst")
    source = ("import boto3, json\n"
              "def lambda_handler(event, context):\n"
              "    boto3.client('s3').put_object(Bucket='outbox-dst', Key='got', Body=json.dumps(event))\n")
    iam = srv.client("iam")
    role = iam.create_role(RoleName="outbox-role", AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST))["Role"]
    iam.put_role_policy(RoleName="outbox-role", PolicyName="s3", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::outbox-dst/*"}]}))
    fn = lam.create_function(FunctionName="outbox-fn", Runtime=PY_RUNTIME, Role=role["Arn"],
                             Handler="lambda_function.lambda_handler", Timeout=30,
                             Code={"ZipFile": py_zip(source)})
    lam.get_waiter("function_active_v2").wait(FunctionName="outbox-fn")
    lam.add_permission(FunctionName="outbox-fn", StatementId="s3", Action="lambda:InvokeFunction",
                       Principal="s3.amazonaws.com", SourceArn="arn:aws:s3:::outbox-src")
    assert srv.stop() == 0
    event = {"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                          "s3": {"object": {"key": "left-behind"}}}]}
    db = sqlite3.connect(srv.data_dir / "s3" / "s3.db")
    db.execute("INSERT INTO outbox (function_arn, bucket, payload) VALUES (?, ?, ?)",
               (fn["FunctionArn"], "outbox-src", json.dumps(event)))
    db.commit()
    db.close()
    srv.start()
    s3 = s3_client(srv)

    def delivered():
        try:
            return json.loads(s3.get_object(Bucket="outbox-dst", Key="got")["Body"].read())
        except ClientError:
            return None

    assert wait_for(delivered, timeout=60, what="the redelivered event") == event
    db = sqlite3.connect(srv.data_dir / "s3" / "s3.db")
    assert wait_for(lambda: db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0, timeout=10,
                    what="an empty outbox")
    db.close()
