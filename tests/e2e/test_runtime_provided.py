"""provided.al2023 functions: a zip's own `bootstrap` speaking the Runtime
API — a shell script with curl, a small Python script, and the official
runtime interface clients, unmodified: awslambdaric (PyPI) and the Rust
`lambda_runtime` crate (tests/fixtures/rust-echo)."""

import os
import zipfile

import pytest

from conftest import invoke, make_zip, report, unique

CURL_BOOTSTRAP = r"""#!/bin/sh
# The AWS "custom runtime" tutorial's bootstrap, with an error path.
set -eu
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
HEADERS="$(mktemp)"
echo "shell runtime starting, handler ${_HANDLER}"
while true; do
  EVENT=$(curl -sS -D "$HEADERS" "$API/invocation/next")
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  DEADLINE=$(grep -Fi Lambda-Runtime-Deadline-Ms "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  ARN=$(grep -Fi Lambda-Runtime-Invoked-Function-Arn "$HEADERS" | tr -d '[:space:]' | cut -d: -f2-)
  echo "shell runtime got $REQUEST_ID"
  case "$EVENT" in
    *'"fail"'*)
      curl -sS -X POST "$API/invocation/$REQUEST_ID/error" \
        -H "Lambda-Runtime-Function-Error-Type: Shell.Failure" \
        -d '{"errorMessage": "the shell failed", "errorType": "Shell.Failure", "stackTrace": []}' >/dev/null
      ;;
    *)
      curl -sS -X POST "$API/invocation/$REQUEST_ID/response" \
        -d "{\"echo\": $EVENT, \"request_id\": \"$REQUEST_ID\", \"deadline\": $DEADLINE, \"arn\": \"$ARN\", \"handler\": \"$_HANDLER\"}" >/dev/null
      ;;
  esac
done
"""

PYTHON_BOOTSTRAP = r"""#!/usr/bin/env python3
import json, os, urllib.request

api = "http://%s/2018-06-01/runtime" % os.environ["AWS_LAMBDA_RUNTIME_API"]
while True:
    with urllib.request.urlopen(api + "/invocation/next") as r:
        rid = r.headers["Lambda-Runtime-Aws-Request-Id"]
        event = json.loads(r.read())
    print("python bootstrap got", rid, flush=True)
    if event.get("fail"):
        req = urllib.request.Request(
            api + "/invocation/%s/error" % rid, method="POST",
            data=json.dumps({"errorMessage": "py failed", "errorType": "Py.Failure"}).encode(),
            headers={"Lambda-Runtime-Function-Error-Type": "Py.Failure"})
    else:
        req = urllib.request.Request(api + "/invocation/%s/response" % rid, method="POST",
                                     data=json.dumps({"py": event, "rid": rid}).encode())
    urllib.request.urlopen(req).read()
"""


def _check_echo_and_fail(lam, name, ok_key, fail_type, fail_message, cold=True):
    resp, body, log = invoke(lam, name, {"hello": "provided"})
    assert "FunctionError" not in resp, body
    rid = resp["ResponseMetadata"]["RequestId"]
    assert body[ok_key] == {"hello": "provided"}
    r = report(log)
    assert r["id"] == rid
    assert (r["init"] is not None) == cold, log
    resp, body, log = invoke(lam, name, {"fail": True})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == fail_type
    assert body["errorMessage"] == fail_message
    # still alive, warm
    resp, body, log = invoke(lam, name, {"hello": "again"})
    assert body[ok_key] == {"hello": "again"}
    assert report(log)["init"] is None
    return log


def test_shell_bootstrap_with_curl(lam, functions):
    name = unique("shell")
    functions.create(make_zip({"bootstrap": CURL_BOOTSTRAP}, executable={"bootstrap"}),
                     name=name, runtime="provided.al2023", handler="function.handler")
    resp, body, log = invoke(lam, name, {"hello": "provided"})
    rid = resp["ResponseMetadata"]["RequestId"]
    assert body["request_id"] == rid
    assert body["handler"] == "function.handler"
    assert body["arn"].endswith(f":function:{name}")
    assert "shell runtime starting, handler function.handler" in log
    assert f"shell runtime got {rid}" in log
    assert report(log)["init"] is not None
    _check_echo_and_fail(lam, name, "echo", "Shell.Failure", "the shell failed", cold=False)


def test_python_script_bootstrap(lam, functions):
    name = unique("pyboot")
    functions.create(make_zip({"bootstrap": PYTHON_BOOTSTRAP}, executable={"bootstrap"}),
                     name=name, runtime="provided.al2023", handler="unused")
    log = _check_echo_and_fail(lam, name, "py", "Py.Failure", "py failed")
    assert "python bootstrap got" in log


def test_missing_or_broken_bootstrap(lam, functions):
    name = unique("noboot")
    functions.create(make_zip({"README": "no bootstrap here"}), name=name,
                     runtime="provided.al2023", handler="x")
    resp, body, _ = invoke(lam, name, {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.InvalidEntrypoint"
    # A bootstrap that exits at once.
    name = unique("exitboot")
    functions.create(make_zip({"bootstrap": "#!/bin/sh\necho bye\nexit 3\n"}, executable={"bootstrap"}),
                     name=name, runtime="provided.al2023", handler="x")
    resp, body, log = invoke(lam, name, {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in body["errorMessage"]
    assert "bye" in log


def test_init_error_reported(lam, functions):
    """A runtime that POSTs /init/error: the invoke fails with its type."""
    boot = r"""#!/usr/bin/env python3
import json, os, urllib.request
api = "http://%s/2018-06-01/runtime" % os.environ["AWS_LAMBDA_RUNTIME_API"]
print("posting an init error", flush=True)
req = urllib.request.Request(api + "/init/error", method="POST",
    data=json.dumps({"errorMessage": "config missing", "errorType": "Init.Broken"}).encode(),
    headers={"Lambda-Runtime-Function-Error-Type": "Init.Broken"})
urllib.request.urlopen(req)
"""
    name = unique("initerr")
    functions.create(make_zip({"bootstrap": boot}, executable={"bootstrap"}), name=name,
                     runtime="provided.al2023", handler="x")
    resp, body, log = invoke(lam, name, {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Init.Broken"
    assert body["errorMessage"] == "config missing"
    assert "posting an init error" in log
    assert "Init.Broken" in log
    # The next invoke tries init again and fails the same way.
    resp, body, _ = invoke(lam, name, {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Init.Broken"


# ---------------------------------------------------------------------------
# Official runtime interface clients
# ---------------------------------------------------------------------------

RIC_BOOTSTRAP = """#!/bin/sh
export PYTHONPATH="$LAMBDA_TASK_ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m awslambdaric lambda_function.lambda_handler
"""

RIC_HANDLER = """import os

print("awslambdaric module loaded")

def lambda_handler(event, context):
    if "fail" in event:
        raise ValueError("ric says " + event["fail"])
    print("awslambdaric handling", context.aws_request_id)
    return {"ric": event, "request_id": context.aws_request_id,
            "function_name": context.function_name,
            "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 10000}
"""


def _zip_tree(root, extra, executable=()):
    files = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in filenames:
            if f == ".complete":
                continue
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                files[os.path.relpath(p, root)] = fh.read()
    files.update(extra)
    return make_zip(files, executable=set(executable))


@pytest.mark.timeout(900)  # the first run pip-installs awslambdaric
def test_awslambdaric(lam, functions, awslambdaric_dir):
    z = _zip_tree(awslambdaric_dir, {"bootstrap": RIC_BOOTSTRAP, "lambda_function.py": RIC_HANDLER},
                  executable={"bootstrap"})
    name = unique("ric")
    functions.create(z, name=name, runtime="provided.al2023",
                     handler="lambda_function.lambda_handler", Timeout=10)
    resp, body, log = invoke(lam, name, {"hello": "ric"})
    assert "FunctionError" not in resp, (body, log)
    rid = resp["ResponseMetadata"]["RequestId"]
    assert body == {"ric": {"hello": "ric"}, "request_id": rid, "function_name": name,
                    "remaining_ok": True}
    assert "awslambdaric module loaded" in log
    assert report(log)["id"] == rid

    resp, body, log = invoke(lam, name, {"fail": "no"})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "ric says no"
    assert body["requestId"] == resp["ResponseMetadata"]["RequestId"]
    assert any("lambda_function.py" in f for f in body["stackTrace"])
    assert "ValueError" in log

    resp, body, log = invoke(lam, name, {"hello": "warm"})
    assert body["ric"] == {"hello": "warm"}
    assert report(log)["init"] is None


@pytest.fixture(scope="module")
def rust_echo_zip(rust_echo_binary):
    # Level 1: the debug binary is large and this runs once per session.
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        info = zipfile.ZipInfo("bootstrap", date_time=(2024, 1, 1, 0, 0, 0))
        info.create_system = 3
        info.external_attr = (0o100755 << 16)
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(rust_echo_binary, "rb") as f:
            z.writestr(info, f.read(), compresslevel=1)
    return buf.getvalue()


@pytest.mark.timeout(1800)  # builds rust-echo when it is missing
def test_rust_lambda_runtime(lam, functions, rust_echo_zip):
    name = unique("rust")
    functions.create(rust_echo_zip, name=name, runtime="provided.al2023", handler="bootstrap")
    resp, body, log = invoke(lam, name, {"hello": "rust"})
    assert "FunctionError" not in resp, body
    rid = resp["ResponseMetadata"]["RequestId"]
    assert body["echo"] == {"hello": "rust"}
    assert body["request_id"] == rid
    assert body["function_name"] == name
    assert body["function_arn"].endswith(f":function:{name}")
    assert f"rust-echo handling {rid}" in log
    assert report(log)["init"] is not None

    resp, body, log = invoke(lam, name, {"fail": "boom"})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorMessage"] == "boom"
    assert body["errorType"]  # lambda_runtime names the Rust error type

    resp, body, log = invoke(lam, name, {"n": 2})
    assert body["echo"] == {"n": 2}
    assert report(log)["init"] is None
