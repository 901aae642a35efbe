"""The Lambda control plane through boto3: get, list, update, delete,
waiters, account settings, names and qualifiers."""

import base64
import hashlib
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT, PY_RUNTIME, REGION, ROLE, error_code, invoke, py_zip, unique

ECHO_ENV = """import os

def lambda_handler(event, context):
    return {"greeting": os.environ.get("GREETING"), "version": "v1",
            "memory": context.memory_limit_in_mb}
"""

ECHO_ENV_V2 = """import os

def lambda_handler(event, context):
    return {"greeting": os.environ.get("GREETING"), "version": "v2"}

def other_handler(event, context):
    return "other handler"
"""


def test_get_function_configuration_and_code_location(lam, functions):
    zip_bytes = py_zip(ECHO_ENV)
    name = unique("cfg")
    functions.create(zip_bytes, name=name, Description="the first one", Timeout=7,
                     MemorySize=256, Environment={"Variables": {"GREETING": "hi"}})
    got = lam.get_function(FunctionName=name)
    cfg = got["Configuration"]
    assert cfg["FunctionName"] == name
    assert cfg["FunctionArn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    assert cfg["Runtime"] == PY_RUNTIME
    assert cfg["Role"] == ROLE
    assert cfg["Handler"] == "lambda_function.lambda_handler"
    assert cfg["Description"] == "the first one"
    assert cfg["Timeout"] == 7 and cfg["MemorySize"] == 256
    assert cfg["Environment"] == {"Variables": {"GREETING": "hi"}}
    assert cfg["CodeSize"] == len(zip_bytes)
    assert cfg["CodeSha256"] == base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()
    assert cfg["Version"] == "$LATEST"
    assert cfg["State"] == "Active" and cfg["LastUpdateStatus"] == "Successful"
    assert cfg["PackageType"] == "Zip"
    assert cfg["RevisionId"]
    assert cfg["LastModified"]

    # Code.Location is a URL a plain HTTP client can download the zip from.
    loc = got["Code"]["Location"]
    with urllib.request.urlopen(loc, timeout=30) as r:
        assert r.status == 200
        assert r.read() == zip_bytes

    # GetFunctionConfiguration is the same configuration.
    only = lam.get_function_configuration(FunctionName=name)
    only.pop("ResponseMetadata")
    assert only == cfg


def _tampered(loc):
    u = urllib.parse.urlsplit(loc)
    q = dict(urllib.parse.parse_qsl(u.query))
    sig = q["Signature"]
    variants = {
        "signature changed": dict(q, Signature=("0" if sig[0] != "0" else "1") + sig[1:]),
        "expired (Expires in the past)": dict(q, Expires="1000000000"),
        "expiry extended": dict(q, Expires=str(int(q["Expires"]) + 86400)),
        "unsigned": {},
    }
    out = {k: urllib.parse.urlunsplit(u._replace(query=urllib.parse.urlencode(v)))
           for k, v in variants.items()}
    # another package's path with this package's signature
    out["other object"] = urllib.parse.urlunsplit(
        u._replace(path=u.path.rsplit("/", 1)[0] + "/" + "0" * 64))
    return out


def test_code_location_refuses_tampered_urls(lam, functions):
    name = unique("loc")
    functions.python(ECHO_ENV, name=name)
    loc = lam.get_function(FunctionName=name)["Code"]["Location"]
    for what, url in _tampered(loc).items():
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url, timeout=30).read()
        assert e.value.code == 403, f"{what}: {e.value.code}"
    with urllib.request.urlopen(loc, timeout=30) as r:  # the real one still works
        assert r.status == 200


def test_list_functions_paging(lam, functions):
    prefix = unique("page")
    names = {f"{prefix}-{i}" for i in range(5)}
    for n in sorted(names):
        functions.python(ECHO_ENV, name=n, wait=False)

    seen, pages, marker = [], 0, None
    while True:
        kw = {"MaxItems": 2}
        if marker:
            kw["Marker"] = marker
        page = lam.list_functions(**kw)
        pages += 1
        assert len(page["Functions"]) <= 2
        seen += [f["FunctionName"] for f in page["Functions"]]
        marker = page.get("NextMarker")
        if not marker:
            break
        assert pages < 1000
    assert len(seen) == len(set(seen)), "a function was listed twice"
    assert names <= set(seen)
    assert pages >= 3

    paginator = lam.get_paginator("list_functions")
    page_list = list(paginator.paginate(PaginationConfig={"PageSize": 2}))
    assert len(page_list) >= 3
    via_paginator = [f["FunctionName"] for p in page_list for f in p["Functions"]]
    assert sorted(via_paginator) == sorted(seen)

    # MaxItems on the paginator caps the total.
    capped = paginator.paginate(PaginationConfig={"MaxItems": 3, "PageSize": 2}).build_full_result()
    assert len(capped["Functions"]) == 3


def test_update_function_configuration(lam, functions):
    name = unique("upd")
    functions.python(ECHO_ENV_V2, name=name)
    _, body, _ = invoke(lam, name, tail=False)
    assert body == {"greeting": None, "version": "v2"}
    before = lam.get_function_configuration(FunctionName=name)

    r = lam.update_function_configuration(
        FunctionName=name, MemorySize=512, Timeout=30, Description="updated",
        Environment={"Variables": {"GREETING": "hello from env"}})
    assert r["MemorySize"] == 512 and r["Timeout"] == 30 and r["Description"] == "updated"
    assert r["RevisionId"] != before["RevisionId"]
    lam.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    cfg = lam.get_function_configuration(FunctionName=name)
    assert cfg["MemorySize"] == 512 and cfg["Timeout"] == 30
    assert cfg["Environment"]["Variables"] == {"GREETING": "hello from env"}
    assert cfg["LastUpdateStatus"] == "Successful"

    # The next invoke sees the new variable and memory size.
    resp, body, log = invoke(lam, name)
    assert body == {"greeting": "hello from env", "version": "v2"}
    assert "Memory Size: 512 MB" in log

    # Handler change takes effect on the next invoke.
    lam.update_function_configuration(FunctionName=name, Handler="lambda_function.other_handler")
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1})
    _, body, _ = invoke(lam, name, tail=False)
    assert body == "other handler"

    # Environment: {} clears the variables.
    lam.update_function_configuration(FunctionName=name, Handler="lambda_function.lambda_handler",
                                      Environment={"Variables": {}})
    _, body, _ = invoke(lam, name, tail=False)
    assert body == {"greeting": None, "version": "v2"}


def test_revision_id_precondition(lam, functions):
    name = unique("rev")
    functions.python(ECHO_ENV, name=name)
    rev = lam.get_function(FunctionName=name)["Configuration"]["RevisionId"]
    r = lam.update_function_configuration(FunctionName=name, Description="one", RevisionId=rev)
    new_rev = r["RevisionId"]
    assert new_rev != rev
    # The old revision id is stale now.
    with pytest.raises(ClientError) as e:
        lam.update_function_configuration(FunctionName=name, Description="two", RevisionId=rev)
    assert error_code(e) == "PreconditionFailedException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(ClientError) as e:
        lam.update_function_code(FunctionName=name, ZipFile=py_zip(ECHO_ENV_V2), RevisionId=rev)
    assert error_code(e) == "PreconditionFailedException"
    assert lam.get_function_configuration(FunctionName=name)["Description"] == "one"
    lam.update_function_configuration(FunctionName=name, Description="two", RevisionId=new_rev)
    assert lam.get_function_configuration(FunctionName=name)["Description"] == "two"


def test_update_function_code(lam, functions):
    name = unique("code")
    functions.python(ECHO_ENV, name=name)
    _, body, _ = invoke(lam, name, tail=False)  # warm an environment on v1
    assert body["version"] == "v1"
    new_zip = py_zip(ECHO_ENV_V2)
    r = lam.update_function_code(FunctionName=name, ZipFile=new_zip)
    assert r["CodeSha256"] == base64.b64encode(hashlib.sha256(new_zip).digest()).decode()
    assert r["CodeSize"] == len(new_zip)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1})
    resp, body, log = invoke(lam, name)
    assert body["version"] == "v2", "the warm v1 environment was reused after a code update"
    assert "Init Duration" in log
    got = lam.get_function(FunctionName=name)
    with urllib.request.urlopen(got["Code"]["Location"], timeout=30) as dl:
        assert dl.read() == new_zip


def test_delete_function(lam, functions):
    name = unique("del")
    functions.python(ECHO_ENV, name=name)
    invoke(lam, name, tail=False)
    r = lam.delete_function(FunctionName=name)
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 204
    for call in (lambda: lam.get_function(FunctionName=name),
                 lambda: lam.get_function_configuration(FunctionName=name),
                 lambda: lam.invoke(FunctionName=name, Payload=b"{}"),
                 lambda: lam.delete_function(FunctionName=name),
                 lambda: lam.update_function_configuration(FunctionName=name, Timeout=5)):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "ResourceNotFoundException"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert name not in [f["FunctionName"] for f in
                        lam.get_paginator("list_functions").paginate().build_full_result()["Functions"]]
    # The name is free again.
    functions.python(ECHO_ENV_V2, name=name)
    _, body, _ = invoke(lam, name, tail=False)
    assert body["version"] == "v2"


def test_waiters(lam, functions):
    name = unique("wait")
    functions.python(ECHO_ENV, name=name, wait=False)
    lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1})
    lam.get_waiter("function_exists").wait(FunctionName=name, WaiterConfig={"Delay": 1})
    lam.get_waiter("function_active").wait(FunctionName=name, WaiterConfig={"Delay": 1})
    lam.update_function_code(FunctionName=name, ZipFile=py_zip(ECHO_ENV_V2))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1})
    lam.get_waiter("function_updated").wait(FunctionName=name, WaiterConfig={"Delay": 1})
    assert lam.get_function(FunctionName=name)["Configuration"]["LastUpdateStatus"] == "Successful"


def test_get_account_settings(lam, functions):
    before = lam.get_account_settings()
    zip_bytes = py_zip(ECHO_ENV)
    functions.python(ECHO_ENV)
    after = lam.get_account_settings()
    limit = after["AccountLimit"]
    assert limit["CodeSizeZipped"] == 50 * 1024 * 1024
    assert limit["CodeSizeUnzipped"] == 250 * 1024 * 1024
    assert limit["ConcurrentExecutions"] >= 1
    assert 0 < limit["UnreservedConcurrentExecutions"] <= limit["ConcurrentExecutions"]
    assert after["AccountUsage"]["FunctionCount"] == before["AccountUsage"]["FunctionCount"] + 1
    assert after["AccountUsage"]["TotalCodeSize"] == before["AccountUsage"]["TotalCodeSize"] + len(zip_bytes)


def test_function_name_forms_and_qualifiers(lam, functions):
    name = unique("arn")
    functions.python(ECHO_ENV, name=name)
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    for ref in (name, arn, f"{ACCOUNT}:function:{name}", f"{arn}:$LATEST", f"{name}:$LATEST"):
        assert lam.get_function_configuration(FunctionName=ref)["FunctionArn"] == arn, ref
        resp, body, _ = invoke(lam, ref, tail=False)
        assert body["version"] == "v1", ref
    resp, body, _ = invoke(lam, name, tail=False, Qualifier="$LATEST")
    assert resp["ExecutedVersion"] == "$LATEST" and body["version"] == "v1"
    assert lam.get_function(FunctionName=name, Qualifier="$LATEST")["Configuration"]["FunctionName"] == name

    # Versions and aliases do not exist (yet): any other qualifier is a 404.
    for q in ("1", "prod"):
        with pytest.raises(ClientError) as e:
            lam.invoke(FunctionName=name, Qualifier=q, Payload=b"{}")
        assert error_code(e) == "ResourceNotFoundException", q
        with pytest.raises(ClientError) as e:
            lam.get_function(FunctionName=name, Qualifier=q)
        assert error_code(e) == "ResourceNotFoundException", q
    with pytest.raises(ClientError) as e:
        lam.get_function_configuration(FunctionName=f"{arn}:prod")
    assert error_code(e) == "ResourceNotFoundException"

    # An ARN of another region or account does not name this function.
    with pytest.raises(ClientError) as e:
        lam.get_function(FunctionName=f"arn:aws:lambda:{REGION}:111111111111:function:{name}")
    assert error_code(e) in ("ResourceNotFoundException", "AccessDeniedException",
                             "InvalidParameterValueException")


def test_create_duplicate_is_a_conflict(lam, functions):
    name = unique("dup")
    functions.python(ECHO_ENV, name=name)
    with pytest.raises(ClientError) as e:
        lam.create_function(FunctionName=name, Runtime=PY_RUNTIME, Role=ROLE,
                            Handler="lambda_function.lambda_handler",
                            Code={"ZipFile": py_zip(ECHO_ENV_V2)})
    assert error_code(e) == "ResourceConflictException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    # The original is untouched.
    _, body, _ = invoke(lam, name, tail=False)
    assert body["version"] == "v1"


def test_missing_function_is_not_found(lam):
    for call in (lambda: lam.get_function(FunctionName="no-such-function"),
                 lambda: lam.invoke(FunctionName="no-such-function", Payload=b"{}")):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "ResourceNotFoundException"
        assert "no-such-function" in e.value.response["Error"]["Message"]


SLOW_VERSION = """import time

def lambda_handler(event, context):
    time.sleep(event.get("sleep", 0))
    return "%s"
"""


def test_code_update_during_an_invocation(lam, functions):
    """The invocation in flight finishes on the old code; the next one runs
    the new code."""
    name = unique("inflight")
    functions.python(SLOW_VERSION % "old", name=name, Timeout=10)
    assert invoke(lam, name, {}, tail=False)[1] == "old"
    out = {}
    t = threading.Thread(target=lambda: out.update(r=invoke(lam, name, {"sleep": 1.5}, tail=False)))
    t.start()
    time.sleep(0.5)
    lam.update_function_code(FunctionName=name, ZipFile=py_zip(SLOW_VERSION % "new"))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1})
    assert invoke(lam, name, {}, tail=False)[1] == "new"
    t.join(30)
    assert out["r"][1] == "old"
    assert invoke(lam, name, {}, tail=False)[1] == "new"


def test_concurrent_creates_of_one_name(lam, functions):
    name = unique("race")
    results = []

    def create():
        try:
            lam.create_function(FunctionName=name, Runtime=PY_RUNTIME, Role=ROLE,
                                Handler="lambda_function.lambda_handler",
                                Code={"ZipFile": py_zip(ECHO_ENV)})
            results.append("created")
        except ClientError as e:
            results.append(e.response["Error"]["Code"])

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    functions.created.append(name)
    assert sorted(results) == ["ResourceConflictException"] * 3 + ["created"]
