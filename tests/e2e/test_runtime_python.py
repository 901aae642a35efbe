"""What a Python function sees and how its failures are reported."""

import base64
import json
import re
import threading
import time
import uuid

import pytest

from conftest import (ACCOUNT, PY_RUNTIME, REGION, invoke, make_zip, report, unique,
                      wait_for)

SLEEPER = """import os, time

def lambda_handler(event, context):
    print("sleeping", event.get("sleep", 0))
    time.sleep(event.get("sleep", 0))
    return {"env": context.log_stream_name, "slept": event.get("sleep", 0)}
"""


def test_timeout(lam, functions):
    name = unique("timeout")
    functions.python(SLEEPER, name=name, Timeout=1)
    _, first, _ = invoke(lam, name, {"sleep": 0})
    started = time.monotonic()
    resp, body, log = invoke(lam, name, {"sleep": 10})
    elapsed = time.monotonic() - started
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in body["errorMessage"]
    assert "Task timed out after 1.00 seconds" in log
    assert "sleeping 10" in log
    assert report(log)["id"] == resp["ResponseMetadata"]["RequestId"]
    assert elapsed < 6, f"a 1 s timeout took {elapsed:.1f}s to be reported"
    assert float(report(log)["duration"]) >= 1000

    # The next invoke works, in a fresh environment (cold start again).
    resp, body, log = invoke(lam, name, {"sleep": 0})
    assert "FunctionError" not in resp
    assert body["slept"] == 0
    assert body["env"] != first["env"], "the timed-out environment was reused"
    assert report(log)["init"] is not None, "no Init Duration after a timeout"


EXITER = """import os

def lambda_handler(event, context):
    if event.get("exit"):
        print("about to exit")
        os._exit(1)
    return {"env": context.log_stream_name}
"""


def test_process_exit(lam, functions):
    name = unique("exit")
    functions.python(EXITER, name=name)
    _, before, _ = invoke(lam, name, {})
    resp, body, log = invoke(lam, name, {"exit": True})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error: exit status 1" in body["errorMessage"]
    assert "about to exit" in log
    assert "Runtime.ExitError" in log
    resp, after, log = invoke(lam, name, {})
    assert "FunctionError" not in resp and after["env"] != before["env"]
    assert report(log)["init"] is not None


def test_import_error(lam, functions):
    name = unique("importerr")
    functions.python("import no_such_module_nimbus_e2e\n\ndef lambda_handler(e, c):\n    return 1\n",
                     name=name)
    resp, body, log = invoke(lam, name, {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert body["errorMessage"].startswith("Unable to import module 'lambda_function'")
    assert "No module named 'no_such_module_nimbus_e2e'" in body["errorMessage"]
    assert "Runtime.ImportModuleError" in log
    # It stays broken, the same way, and the server keeps answering.
    resp, body, _ = invoke(lam, name, {})
    assert body["errorType"] == "Runtime.ImportModuleError"


def test_syntax_error_in_module(lam, functions):
    name = unique("syntaxerr")
    functions.python("def lambda_handler(e, c)\n    return 1\n", name=name)
    resp, body, _ = invoke(lam, name, {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.UserCodeSyntaxError"
    assert "lambda_function" in body["errorMessage"]


def test_missing_handler(lam, functions):
    name = unique("nohandler")
    functions.python("def lambda_handler(e, c):\n    return 1\n", name=name,
                     handler="lambda_function.not_there")
    resp, body, _ = invoke(lam, name, {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.HandlerNotFound"
    assert body["errorMessage"] == "Handler 'not_there' missing on module 'lambda_function'"


def test_handled_exception_types(lam, functions):
    name = unique("raise")
    functions.python('''class MyError(Exception):
    pass

def lambda_handler(event, context):
    raise MyError("custom " + event["what"])
''', name=name)
    resp, body, log = invoke(lam, name, {"what": "failure"})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "MyError"
    assert body["errorMessage"] == "custom failure"
    assert body["requestId"] == resp["ResponseMetadata"]["RequestId"]
    assert any("lambda_function.py" in f for f in body["stackTrace"])
    assert "[ERROR] MyError: custom failure" in log


COUNTER = """import os

count = 0

def lambda_handler(event, context):
    global count
    count += 1
    return {"count": count, "env": context.log_stream_name}
"""


def test_warm_reuse(lam, functions):
    name = unique("warm")
    functions.python(COUNTER, name=name)
    results = []
    for i in range(4):
        resp, body, log = invoke(lam, name, {})
        results.append((body, report(log)))
    assert [b["count"] for b, _ in results] == [1, 2, 3, 4]
    assert len({b["env"] for b, _ in results}) == 1
    assert results[0][1]["init"] is not None
    assert all(r["init"] is None for _, r in results[1:])


def test_concurrent_invocations_run_in_parallel(lam, functions):
    name = unique("parallel")
    functions.python(SLEEPER, name=name, Timeout=10)
    n = 4
    results, errors = [None] * n, []

    def one(i):
        try:
            resp, body, _ = invoke(lam, name, {"sleep": 1}, tail=False)
            results[i] = (resp.get("FunctionError"), body)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - started
    assert not errors, errors
    assert all(r and r[0] is None for r in results), results
    assert len({r[1]["env"] for r in results}) == n, "invocations shared an environment"
    assert elapsed < 3.0, f"{n} parallel 1 s invocations took {elapsed:.2f}s"


CONTEXT = """import json, os

def lambda_handler(event, context):
    cc = context.client_context
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "remaining": context.get_remaining_time_in_millis(),
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "client_context_custom": cc.custom if cc else None,
        "client_context_env": cc.env if cc else None,
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "files": sorted(os.listdir(os.environ["LAMBDA_TASK_ROOT"])),
    }
"""


def test_context_object(lam, functions):
    name = unique("context")
    functions.python(CONTEXT, name=name, Timeout=10, MemorySize=256)
    resp, body, log = invoke(lam, name, {})
    rid = resp["ResponseMetadata"]["RequestId"]
    assert body["aws_request_id"] == rid
    assert report(log)["id"] == rid
    assert body["function_name"] == name
    assert body["function_version"] == "$LATEST"
    assert int(body["memory_limit_in_mb"]) == 256
    assert body["invoked_function_arn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    assert 8000 < body["remaining"] <= 10000
    assert body["log_group_name"] == f"/aws/lambda/{name}"
    assert body["log_stream_name"]
    assert body["client_context_custom"] is None

    # Invoked by ARN with a qualifier, the context names what was invoked.
    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    _, body2, _ = invoke(lam, f"{arn}:$LATEST", {}, tail=False)
    assert body2["invoked_function_arn"] in (arn, f"{arn}:$LATEST")
    assert body2["aws_request_id"] != rid
    assert body2["log_stream_name"] == body["log_stream_name"], "warm env has a new stream"


def test_client_context_reaches_handler(lam, functions):
    name = unique("clientctx")
    functions.python(CONTEXT, name=name)
    cc = {"custom": {"tenant": "acme", "n": 1}, "env": {"platform": "e2e"},
          "client": {"installation_id": "abc"}}
    resp, body, _ = invoke(lam, name, {}, tail=False,
                           ClientContext=base64.b64encode(json.dumps(cc).encode()).decode())
    assert "FunctionError" not in resp
    assert body["client_context_custom"] == {"tenant": "acme", "n": 1}
    assert body["client_context_env"] == {"platform": "e2e"}


def test_runtime_environment_variables(lam, functions, server):
    name = unique("envvars")
    functions.python(CONTEXT, name=name, Environment={"Variables": {"MY_SETTING": "42"}})
    _, body, _ = invoke(lam, name, {}, tail=False)
    env = body["env"]
    assert env["MY_SETTING"] == "42"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert env["AWS_REGION"] == REGION and env["AWS_DEFAULT_REGION"] == REGION
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "128"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == f"/aws/lambda/{name}"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == body["log_stream_name"]
    assert env["_HANDLER"] == "lambda_function.lambda_handler"
    assert env["AWS_EXECUTION_ENV"] == f"AWS_Lambda_{PY_RUNTIME}"
    assert env["LAMBDA_TASK_ROOT"] == body["cwd"]
    assert "lambda_function.py" in body["files"]
    assert env["LAMBDA_RUNTIME_DIR"]
    host, _, port = env["AWS_LAMBDA_RUNTIME_API"].rpartition(":")
    assert host and port.isdigit()
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
    assert env["AWS_ENDPOINT_URL"].rstrip("/") == server.url.rstrip("/")
    assert env["TZ"] in (":UTC", "UTC")
    assert env["LANG"]
    assert "/usr/bin" in env["PATH"].split(":")
    assert env["LD_LIBRARY_PATH"]


BOTO3_INSIDE = """import boto3
from botocore.exceptions import ClientError

def lambda_handler(event, context):
    client = boto3.client("lambda")
    names = []
    for page in client.get_paginator("list_functions").paginate():
        names += [f["FunctionName"] for f in page["Functions"]]
    me = client.get_function_configuration(FunctionName=context.function_name)
    try:
        client.delete_function(FunctionName=context.function_name)
        denied = None
    except ClientError as e:
        denied = e.response["Error"]["Code"]
    return {"names": names, "my_arn": me["FunctionArn"],
            "endpoint": client.meta.endpoint_url, "delete": denied}
"""


def test_boto3_inside_a_function_talks_to_nimbus_with_its_roles_permissions(lam, functions, server):
    """The function's boto3 uses its execution role's session: what the
    role's policy allows works, the rest is AccessDenied."""
    iam = server.client("iam")
    role = unique("reader-role")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=role, PolicyName="read-lambda", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["lambda:ListFunctions", "lambda:GetFunctionConfiguration"],
                       "Resource": "*"}]}))
    name = unique("boto3-inside")
    functions.python(BOTO3_INSIDE, name=name, Timeout=30, Role=arn)
    resp, body, log = invoke(lam, name, {})
    assert "FunctionError" not in resp, body
    assert name in body["names"]
    assert body["my_arn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    assert body["endpoint"].rstrip("/") == server.url.rstrip("/")
    assert body["delete"] == "AccessDeniedException", "DeleteFunction is not in the role's policy"
    assert lam.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name


MARKER = """def lambda_handler(event, context):
    print("async-marker " + event["marker"])
    return "done"
"""


def test_event_invocation(lam, logs, functions):
    name = unique("event")
    functions.python(MARKER, name=name)
    marker = uuid.uuid4().hex
    resp = lam.invoke(FunctionName=name, InvocationType="Event",
                      Payload=json.dumps({"marker": marker}))
    assert resp["StatusCode"] == 202
    assert resp["Payload"].read() == b""

    def seen():
        try:
            events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}",
                                            filterPattern=marker)["events"]
        except logs.exceptions.ResourceNotFoundException:
            return None
        return [e["message"] for e in events if f"async-marker {marker}" in e["message"]]

    assert wait_for(seen, timeout=30, what="the Event invocation's log line")


DRY_RUN_COUNTER = """count = 0

def lambda_handler(event, context):
    global count
    count += 1
    return count
"""


def test_dry_run(lam, functions):
    name = unique("dryrun")
    functions.python(DRY_RUN_COUNTER, name=name)
    resp = lam.invoke(FunctionName=name, InvocationType="DryRun", Payload=b"{}")
    assert resp["StatusCode"] == 204
    assert resp["Payload"].read() == b""
    # DryRun did not run the handler: the first real invoke counts 1.
    _, body, _ = invoke(lam, name, {}, tail=False)
    assert body == 1
    # DryRun of a missing function is still a 404.
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=unique("nope"), InvocationType="DryRun", Payload=b"{}")


def test_large_response(lam, functions):
    name = unique("bigresp")
    functions.python("def lambda_handler(e, c):\n    return 'x' * e['n']\n", name=name,
                     MemorySize=512)
    _, body, _ = invoke(lam, name, {"n": 5 * 1024 * 1024}, tail=False)
    assert body == "x" * (5 * 1024 * 1024)
    resp, body, _ = invoke(lam, name, {"n": 7 * 1024 * 1024}, tail=False)
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Function.ResponseSizeTooLarge"
    # and the function still answers afterwards
    _, body, _ = invoke(lam, name, {"n": 3}, tail=False)
    assert body == "xxx"


def test_non_json_result(lam, functions):
    name = unique("nonjson")
    functions.python("def lambda_handler(e, c):\n    return {1, 2}\n", name=name)
    resp, body, _ = invoke(lam, name, {}, tail=False)
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.MarshalError"


def test_log_tail_is_the_last_4kb(lam, functions):
    name = unique("chatty")
    functions.python("""def lambda_handler(event, context):
    for i in range(300):
        print("chatty line", i, "." * 40)
    return "ok"
""", name=name)
    resp, body, log = invoke(lam, name, {})
    assert body == "ok"
    assert len(base64.b64decode(resp["LogResult"])) <= 4096
    assert len(log) > 3000
    assert "chatty line 299" in log and "chatty line 0 " not in log
    assert log.rstrip("\n").splitlines()[-1].startswith("REPORT RequestId: ")


def test_unicode_round_trip(lam, functions):
    name = unique("unicode")
    functions.python("""def lambda_handler(event, context):
    print("got", event["text"])
    return {"text": event["text"][::-1], "len": len(event["text"])}
""", name=name)
    text = "héllo wörld ✓ 日本語 🚀"
    resp, body, log = invoke(lam, name, {"text": text})
    assert body == {"text": text[::-1], "len": len(text)}
    assert "got " + text in log


def test_handler_paths_and_packages(lam, functions):
    z = make_zip({
        "src/app.py": "def handler(e, c):\n    return 'src/app'\n",
        "pkg/__init__.py": "",
        "pkg/mod.py": "def handler(e, c):\n    return 'pkg.mod'\n",
    })
    for handler, expected in (("src/app.handler", "src/app"), ("pkg.mod.handler", "pkg.mod"),
                              ("pkg/mod.handler", "pkg.mod")):
        name = unique("paths")
        functions.create(z, name=name, handler=handler)
        resp, body, _ = invoke(lam, name, {}, tail=False)
        assert "FunctionError" not in resp, (handler, body)
        assert body == expected, handler


def test_stderr_and_logging_module(lam, functions):
    name = unique("logging")
    functions.python("""import logging, sys

logger = logging.getLogger()
logger.setLevel(logging.INFO)

def lambda_handler(event, context):
    sys.stderr.write("to stderr\\n")
    logger.info("hello %s", "logging")
    logger.warning("careful")
    return "ok"
""", name=name)
    resp, body, log = invoke(lam, name, {})
    rid = resp["ResponseMetadata"]["RequestId"]
    lines = log.splitlines()
    assert "to stderr" in lines
    info = [l for l in lines if l.startswith("[INFO]")]
    assert len(info) == 1 and info[0].endswith(f"\t{rid}\thello logging"), info
    fields = info[0].split("\t")
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$", fields[1]), fields
    assert any(l.startswith("[WARNING]") and l.endswith("\tcareful") for l in lines)


def test_environment_values_pass_through(lam, functions):
    name = unique("envval")
    values = {"WITH_EQUALS": "a=b=c", "WITH_SPACES": "  spaced out  ", "UNICODE": "ünï ✓",
              "EMPTY": "", "JSONISH": '{"k": [1, 2]}'}
    functions.python("import os\ndef lambda_handler(e, c):\n"
                     "    return {k: os.environ.get(k) for k in e}\n",
                     name=name, Environment={"Variables": values})
    _, body, _ = invoke(lam, name, list(values), tail=False)
    assert body == values


def test_max_memory_setting(lam, functions):
    name = unique("bigmem")
    functions.python("def lambda_handler(e, c):\n    return c.memory_limit_in_mb\n",
                     name=name, MemorySize=10240, Timeout=900)
    _, body, log = invoke(lam, name, {})
    assert int(body) == 10240
    assert report(log)["memory"] == "10240"


def test_max_memory_used_is_measured(lam, functions):
    name = unique("memuse")
    functions.python("""def lambda_handler(event, context):
    b = bytearray(event["mb"] * 1024 * 1024)
    for i in range(0, len(b), 4096):
        b[i] = 1
    return len(b)
""", name=name, MemorySize=1024)
    _, _, log = invoke(lam, name, {"mb": 1})
    small = int(report(log)["max_memory"])
    _, _, log = invoke(lam, name, {"mb": 200})
    big = int(report(log)["max_memory"])
    assert 0 < small < 150
    assert big >= 200, f"200 MB touched, Max Memory Used {big} MB"
