"""Makes a half-size thumbnail of every image uploaded to a bucket.

Triggered by `s3:ObjectCreated:*` on the source bucket; writes
`resized-<key>` into `<source bucket>-resized`. Never write into the source
bucket itself: that would trigger this function again, in a loop.
"""

import os
import uuid
from urllib.parse import unquote_plus

import boto3
from PIL import Image

s3 = boto3.client("s3")


def make_thumbnail(src, dst):
    with Image.open(src) as img:
        img.thumbnail((max(1, img.width // 2), max(1, img.height // 2)))
        img.save(dst)


def lambda_handler(event, context):
    for record in event["Records"]:
        bucket = record["s3"]["bucket"]["name"]
        # Keys arrive form-encoded, as S3 sends them: "my photo.jpg" is
        # "my+photo.jpg".
        key = unquote_plus(record["s3"]["object"]["key"])
        name = os.path.basename(key)
        original = f"/tmp/{uuid.uuid4()}-{name}"
        thumbnail = f"/tmp/resized-{name}"
        s3.download_file(bucket, key, original)
        make_thumbnail(original, thumbnail)
        s3.upload_file(thumbnail, f"{bucket}-resized", f"resized-{key}")
        print(f"resized s3://{bucket}/{key} into s3://{bucket}-resized/resized-{key}")
        os.remove(original)
        os.remove(thumbnail)
