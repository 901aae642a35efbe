"""SigV4 on every request: what boto3, the AWS CLI and a plain HTTP client
see when the signature is missing, wrong, stale or scoped elsewhere."""

import datetime
import json
import urllib.error
import urllib.request
from unittest import mock

import boto3
import pytest
from botocore.awsrequest import AWSRequest
from botocore.auth import SigV4Auth
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import ACCESS_KEY, REGION, SECRET_KEY, error_code


def client(server, key=ACCESS_KEY, secret=SECRET_KEY, region=REGION, service="lambda"):
    return boto3.client(service, endpoint_url=server.url, region_name=region,
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(retries={"total_max_attempts": 1}))


def send(req):
    """Sends a botocore AWSRequest with urllib; returns (status, error type, body)."""
    prepared = req.prepare()
    r = urllib.request.Request(prepared.url, data=prepared.body, method=prepared.method,
                               headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, resp.headers.get("x-amzn-ErrorType"), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("x-amzn-ErrorType"), e.read()


def test_wrong_secret_is_invalid_signature(server):
    with pytest.raises(ClientError) as e:
        client(server, secret="not-the-secret").list_functions()
    assert error_code(e) == "InvalidSignatureException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_unknown_key_is_unrecognized_client(server):
    with pytest.raises(ClientError) as e:
        client(server, key="AKIDNOSUCHKEY").list_functions()
    assert error_code(e) == "UnrecognizedClientException"


def test_credentials_for_another_region_are_refused(server):
    with pytest.raises(ClientError) as e:
        client(server, region="eu-west-1").list_functions()
    assert error_code(e) == "InvalidSignatureException"
    assert "region" in e.value.response["Error"]["Message"]


def test_logs_api_errors_use_its_protocol(server):
    with pytest.raises(ClientError) as e:
        client(server, secret="wrong", service="logs").describe_log_groups()
    assert error_code(e) == "InvalidSignatureException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_unsigned_request_is_missing_authentication_token(server):
    req = AWSRequest(method="GET", url=f"{server.url}/2015-03-31/functions/")
    status, code, _ = send(req)
    assert (status, code) == (403, "MissingAuthenticationTokenException")


def test_tampered_body_after_signing_is_refused(server, functions):
    name = functions.python("def lambda_handler(e, c):\n    return e\n")["FunctionName"]
    url = f"{server.url}/2015-03-31/functions/{name}/invocations"
    req = AWSRequest(method="POST", url=url, data=b'{"amount": 1}')
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lambda", REGION).add_auth(req)
    status, code, body = send(req)
    assert (status, code, json.loads(body)) == (200, None, {"amount": 1})
    req.data = b'{"amount": 9}'
    status, code, _ = send(req)
    assert (status, code) == (403, "InvalidSignatureException")


def test_stale_signature_is_expired(server):
    req = AWSRequest(method="GET", url=f"{server.url}/2015-03-31/functions/")
    auth = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "lambda", REGION)
    with mock.patch("botocore.auth.get_current_datetime",
                    return_value=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)):
        auth.add_auth(req)
    status, code, body = send(req)
    assert (status, code) == (403, "InvalidSignatureException")
    assert b"Signature expired: 20200101T000000Z" in body


def test_presigned_query_auth_is_accepted(server, functions):
    from botocore.auth import SigV4QueryAuth
    name = functions.python("def lambda_handler(e, c):\n    return 'ok'\n")["FunctionName"]
    req = AWSRequest(method="GET", url=f"{server.url}/2015-03-31/functions/{name}/configuration")
    SigV4QueryAuth(Credentials(ACCESS_KEY, SECRET_KEY), "lambda", REGION, expires=60).add_auth(req)
    status, code, body = send(req)
    assert status == 200, body
    assert json.loads(body)["FunctionName"] == name
    tampered = AWSRequest(method="GET", url=req.url.replace(name, name + "x"))
    status, code, _ = send(tampered)
    assert (status, code) == (403, "InvalidSignatureException")


def test_cli_with_wrong_credentials_fails_and_server_keeps_serving(cli, lam):
    cli.env["AWS_SECRET_ACCESS_KEY"] = "wrong"
    p = cli.run("lambda", "list-functions", check=False)
    assert p.returncode != 0
    assert "InvalidSignatureException" in p.stderr
    assert "Functions" in lam.list_functions()
