"""The seed: the AWS course's console flow, done with boto3 and with the AWS CLI.

Create the "Hello world" blueprint function, invoke it with the default test
event and get "value1", invoke it without key1 and see Lambda's KeyError
failure, and read the START/END/REPORT lines.
"""

import base64
import json


from conftest import (HELLO_EVENT, HELLO_WORLD, PY_RUNTIME, ROLE, invoke, make_zip,
                      report)

VALUE1_LINE = """print("value1 = " + event['key1'])"""
VALUE1_LINENO = HELLO_WORLD.splitlines().index("    " + VALUE1_LINE) + 1


def check_success_log(log, cold):
    lines = log.splitlines()
    starts = [l for l in lines if l.startswith("START RequestId: ")]
    assert len(starts) == 1 and starts[0].endswith(" Version: $LATEST"), log
    rid = starts[0].split()[2]
    assert f"END RequestId: {rid}" in lines, log
    for v in ("value1 = value1", "value2 = value2", "value3 = value3"):
        assert v in lines, log
    # what the handler printed sits between START and END
    assert lines.index(starts[0]) < lines.index("value1 = value1") < lines.index(f"END RequestId: {rid}")
    r = report(log)
    assert r["id"] == rid
    assert float(r["duration"]) > 0
    assert int(r["billed"]) >= 1
    assert int(r["billed"]) >= int(float(r["duration"]))
    assert r["memory"] == "128"
    assert int(r["max_memory"]) > 0
    if cold:
        assert "Loading function" in lines, log
        assert lines.index("Loading function") < lines.index(starts[0]), "import output precedes START"
        assert r["init"] is not None and float(r["init"]) > 0, log
    else:
        assert "Loading function" not in lines, log
        assert r["init"] is None, f"Init Duration on a warm invoke:\n{log}"
    return rid


def check_key_error(body, rid):
    assert body["errorMessage"] == "'key1'"
    assert body["errorType"] == "KeyError"
    assert body["requestId"] == rid
    trace = body["stackTrace"]
    assert isinstance(trace, list) and len(trace) == 1, trace
    frame = trace[0]
    assert "lambda_function.py" in frame
    assert f'line {VALUE1_LINENO}, in lambda_handler' in frame
    assert VALUE1_LINE in frame


def test_course_flow_boto3(lam, functions):
    zip_bytes = make_zip({"lambda_function.py": HELLO_WORLD})
    created = functions.create(zip_bytes, name="demo-function")
    assert created["FunctionName"] == "demo-function"
    assert created["Runtime"] == PY_RUNTIME
    assert created["Handler"] == "lambda_function.lambda_handler"
    assert created["MemorySize"] == 128 and created["Timeout"] == 3
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201

    # Test event -> "value1", with a cold start in the log.
    resp, body, log = invoke(lam, "demo-function", HELLO_EVENT)
    assert resp["StatusCode"] == 200
    assert "FunctionError" not in resp
    assert body == "value1"
    assert resp["ExecutedVersion"] == "$LATEST"
    rid = check_success_log(log, cold=True)
    assert rid == resp["ResponseMetadata"]["RequestId"]

    # Again: warm, no import output, no Init Duration.
    resp, body, log = invoke(lam, "demo-function", HELLO_EVENT)
    assert body == "value1"
    check_success_log(log, cold=False)

    # Without key1: Lambda's KeyError failure.
    resp, body, log = invoke(lam, "demo-function", {"key2": "value2", "key3": "value3"})
    assert resp["StatusCode"] == 200
    assert resp["FunctionError"] == "Unhandled"
    rid = resp["ResponseMetadata"]["RequestId"]
    check_key_error(body, rid)
    assert f"START RequestId: {rid}" in log
    assert "[ERROR] KeyError: 'key1'" in log
    assert "Traceback (most recent call last):" in log
    assert report(log)["id"] == rid

    # The function survives its error.
    resp, body, _ = invoke(lam, "demo-function", HELLO_EVENT, tail=False)
    assert body == "value1" and "FunctionError" not in resp


def test_course_flow_aws_cli(cli):
    name = "demo-function-cli"
    (cli.cwd / "function.zip").write_bytes(make_zip({"lambda_function.py": HELLO_WORLD}))
    created = cli.json("lambda", "create-function", "--function-name", name,
                       "--runtime", PY_RUNTIME, "--role", ROLE,
                       "--handler", "lambda_function.lambda_handler",
                       "--zip-file", "fileb://function.zip")
    try:
        assert created["FunctionName"] == name
        assert created["FunctionArn"].endswith(f":function:{name}")
        cli.run("lambda", "wait", "function-active-v2", "--function-name", name)

        got = cli.json("lambda", "get-function", "--function-name", name)
        assert got["Configuration"]["State"] == "Active"
        listed = cli.json("lambda", "list-functions")
        assert name in [f["FunctionName"] for f in listed["Functions"]]

        out = cli.json("lambda", "invoke", "--function-name", name,
                       *cli.payload_args(json.dumps(HELLO_EVENT)),
                       "out.json", "--log-type", "Tail")
        assert out["StatusCode"] == 200
        assert "FunctionError" not in out
        assert out["ExecutedVersion"] == "$LATEST"
        assert json.loads((cli.cwd / "out.json").read_text()) == "value1"
        check_success_log(base64.b64decode(out["LogResult"]).decode(), cold=True)

        # The failing invoke: the CLI exits 0 and reports FunctionError.
        p = cli.run("lambda", "invoke", "--function-name", name,
                    *cli.payload_args('{"key2": "value2", "key3": "value3"}'),
                    "err.json", "--log-type", "Tail")
        assert p.returncode == 0, p.stderr
        out = json.loads(p.stdout)
        assert out["FunctionError"] == "Unhandled"
        log = base64.b64decode(out["LogResult"]).decode()
        rid = report(log)["id"]
        check_key_error(json.loads((cli.cwd / "err.json").read_text()), rid)
        assert "[ERROR] KeyError: 'key1'" in log
    finally:
        cli.run("lambda", "delete-function", "--function-name", name, check=False)
    p = cli.run("lambda", "get-function", "--function-name", name, check=False)
    assert p.returncode != 0
    assert "ResourceNotFoundException" in p.stderr
