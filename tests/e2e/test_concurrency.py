"""Concurrency controls through boto3, the AWS CLI and the nimbus CLI:
reserved concurrency (Put/Get/DeleteFunctionConcurrency, throttles with
their Reason, GetAccountSettings' unreserved pool and its floor) and
provisioned concurrency (Put/Get/Delete/ListProvisionedConcurrencyConfigs,
environments initialised ahead, no Init Duration, restarts)."""

import json
import os
import subprocess
import threading
import time

import pytest
from botocore.exceptions import ClientError

from conftest import (ACCESS_KEY, ACCOUNT, PY_RUNTIME, REGION, ROLE, SECRET_KEY, error_code,
                      invoke, py_zip, report, server_binary, unique, wait_for)

SLEEPER = """import os, time

print("init", os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"])

def lambda_handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"init": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"],
            "version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"]}
"""


def at_once(lam, name, n, sleep, **kw):
    """`n` invocations sleeping `sleep` seconds, started together; returns
    for each its (response, body) or the ClientError's response."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def one(i):
        barrier.wait()
        try:
            resp = lam.invoke(FunctionName=name, LogType="Tail",
                              Payload=json.dumps({"sleep": sleep}), **kw)
            results[i] = (resp, json.loads(resp["Payload"].read()))
        except ClientError as e:
            results[i] = e.response

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def throttle_reasons(results):
    return sorted(r.get("Reason", "?") for r in results if isinstance(r, dict))


def test_reserved_zero_throttles_every_invocation(lam, functions):
    name = unique("res0")
    functions.python(SLEEPER, name=name)
    out = lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    assert out["ReservedConcurrentExecutions"] == 0
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name, Payload=b"{}")
    r = e.value.response
    assert error_code(e) == "TooManyRequestsException"
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert r["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert lam.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 0}
    assert lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 0
    lam.delete_function_concurrency(FunctionName=name)
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName=name)
    assert "Concurrency" not in lam.get_function(FunctionName=name)
    assert invoke(lam, name, tail=False)[1]["init"] == "on-demand"


def test_reserved_n_throttles_exactly_the_extra_invocations(lam, functions):
    name = unique("res2")
    functions.python(SLEEPER, name=name, Timeout=20)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    results = at_once(lam, name, 3, 3)
    assert sum(isinstance(r, tuple) for r in results) == 2
    assert throttle_reasons(results) == ["ReservedFunctionConcurrentInvocationLimitExceeded"]
    # Once they are done, two at a time run again.
    results = at_once(lam, name, 2, 0)
    assert all(isinstance(r, tuple) for r in results)


def test_account_settings_and_the_unreserved_floor(own_server, tmp_path, aws_cli_available):
    # 30 in all: 3 (a tenth) always stay unreserved.
    srv = own_server(args=["--concurrency", "30"])
    lam = srv.client(max_pool_connections=10)
    for name in ("big", "small", "shared"):
        lam.create_function(FunctionName=name, Runtime=PY_RUNTIME, Role=ROLE, Timeout=20,
                            Handler="lambda_function.lambda_handler", Code={"ZipFile": py_zip(SLEEPER)})

    def limits():
        return lam.get_account_settings()["AccountLimit"]

    assert limits()["ConcurrentExecutions"] == 30
    assert limits()["UnreservedConcurrentExecutions"] == 30
    lam.put_function_concurrency(FunctionName="small", ReservedConcurrentExecutions=5)
    assert limits()["UnreservedConcurrentExecutions"] == 25
    with pytest.raises(ClientError) as e:
        lam.put_function_concurrency(FunctionName="big", ReservedConcurrentExecutions=23)
    assert error_code(e) == "InvalidParameterValueException"
    assert "minimum value of [3]" in e.value.response["Error"]["Message"]
    lam.put_function_concurrency(FunctionName="big", ReservedConcurrentExecutions=22)
    assert limits()["UnreservedConcurrentExecutions"] == 3
    assert limits()["ConcurrentExecutions"] == 30

    # Functions without a reservation share the 3 left.
    results = at_once(lam, "shared", 4, 3)
    assert throttle_reasons(results) == ["ConcurrentInvocationLimitExceeded"]
    # The reserved ones have theirs whatever the others do.
    results = at_once(lam, "small", 5, 1)
    assert all(isinstance(r, tuple) for r in results)

    # The same through the AWS CLI.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE="/dev/null",
               AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_PAGER="", AWS_MAX_ATTEMPTS="1")

    def aws(*args):
        p = subprocess.run(["aws", "--endpoint-url", srv.url, "--output", "json", "lambda", *args],
                           env=env, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout) if p.stdout.strip() else {}

    assert aws("get-function-concurrency", "--function-name", "big") == \
        {"ReservedConcurrentExecutions": 22}
    aws("delete-function-concurrency", "--function-name", "big")
    assert aws("get-account-settings")["AccountLimit"]["UnreservedConcurrentExecutions"] == 25
    assert aws("put-function-concurrency", "--function-name", "big",
               "--reserved-concurrent-executions", "10") == {"ReservedConcurrentExecutions": 10}
    assert aws("get-account-settings")["AccountLimit"]["UnreservedConcurrentExecutions"] == 15


def wait_status(lam, name, qualifier, timeout=60):
    def done():
        c = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        return c if c["Status"] != "IN_PROGRESS" else None
    return wait_for(done, timeout=timeout, interval=0.2, what=f"{name}:{qualifier} to leave IN_PROGRESS")


def test_provisioned_concurrency_initialises_environments_ahead(lam, logs, functions):
    name = unique("prov")
    functions.python(SLEEPER, name=name, Publish=True, Timeout=20)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")

    with pytest.raises(ClientError) as e:
        lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="$LATEST",
                                               ProvisionedConcurrentExecutions=1)
    assert error_code(e) == "InvalidParameterValueException"
    assert "unpublished" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    assert error_code(e) == "ProvisionedConcurrencyConfigNotFoundException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404

    put = lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="live",
                                                 ProvisionedConcurrentExecutions=2)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert put["RequestedProvisionedConcurrentExecutions"] == 2
    assert put["Status"] in ("IN_PROGRESS", "READY") and put["LastModified"]
    ready = wait_status(lam, name, "live")
    assert ready["Status"] == "READY", ready
    assert ready["AllocatedProvisionedConcurrentExecutions"] == 2
    assert ready["AvailableProvisionedConcurrentExecutions"] == 2

    # The environments exist before the first invoke: their init ran and
    # was logged, in streams of version 1.
    def inits():
        try:
            events = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")["events"]
        except ClientError:
            return []
        return [e for e in events if e["message"] == "init provisioned-concurrency"]
    found = wait_for(lambda: len(inits()) == 2 and inits(), what="two provisioned inits in the log")
    assert all("/[1]" in e["logStreamName"] for e in found)

    resp, body, log = invoke(lam, name, Qualifier="live")
    assert body == {"init": "provisioned-concurrency", "version": "1"}
    assert report(log)["init"] is None, f"no Init Duration on a provisioned environment:\n{log}"
    assert "init provisioned" not in log

    listed = lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"]
    assert [(c["FunctionArn"], c["Status"]) for c in listed] == \
        [(f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}:live", "READY")]

    # More at once than provisioned: the extra one is an on-demand cold start.
    results = at_once(lam, name, 3, 2, Qualifier="live")
    kinds = sorted(body["init"] for _, body in results)
    assert kinds == ["on-demand", "provisioned-concurrency", "provisioned-concurrency"]

    # Provisioned concurrency counts toward a reservation.
    with pytest.raises(ClientError) as e:
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    assert error_code(e) == "InvalidParameterValueException"

    lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    with pytest.raises(ClientError) as e:
        lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier="live")
    assert error_code(e) == "ProvisionedConcurrencyConfigNotFoundException"
    assert lam.list_provisioned_concurrency_configs(FunctionName=name)["ProvisionedConcurrencyConfigs"] == []


def test_provisioned_init_failure_is_reported(lam, functions):
    name = unique("provfail")
    functions.python("raise RuntimeError('cannot reach the database')\n", name=name, Publish=True)
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier="1",
                                           ProvisionedConcurrentExecutions=1)
    failed = wait_status(lam, name, "1")
    assert failed["Status"] == "FAILED"
    assert "cannot reach the database" in failed["StatusReason"]


def test_provisioned_concurrency_survives_a_restart(own_server, tmp_path):
    data = tmp_path / "data"
    srv = own_server(data)
    lam = srv.client()
    lam.create_function(FunctionName="kept", Runtime=PY_RUNTIME, Role=ROLE, Publish=True,
                        Handler="lambda_function.lambda_handler", Code={"ZipFile": py_zip(SLEEPER)})
    lam.put_provisioned_concurrency_config(FunctionName="kept", Qualifier="1",
                                           ProvisionedConcurrentExecutions=1)
    assert wait_status(lam, "kept", "1")["Status"] == "READY"
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 63
    assert srv.stop() == 0

    srv = own_server(data)
    lam = srv.client()
    assert wait_status(lam, "kept", "1")["Status"] == "READY"
    assert lam.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 63
    _, body, log = invoke(lam, "kept", Qualifier="1")
    assert body["init"] == "provisioned-concurrency" and report(log)["init"] is None


def test_provisioned_concurrency_with_the_aws_cli(cli, functions):
    name = unique("provcli")
    functions.python(SLEEPER, name=name, Publish=True)
    put = cli.json("lambda", "put-provisioned-concurrency-config", "--function-name", name,
                   "--qualifier", "1", "--provisioned-concurrent-executions", "1")
    assert put["RequestedProvisionedConcurrentExecutions"] == 1
    deadline = time.monotonic() + 60
    while True:
        got = cli.json("lambda", "get-provisioned-concurrency-config", "--function-name", name,
                       "--qualifier", "1")
        if got["Status"] != "IN_PROGRESS" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert got["Status"] == "READY" and got["AllocatedProvisionedConcurrentExecutions"] == 1
    listed = cli.json("lambda", "list-provisioned-concurrency-configs", "--function-name", name)
    assert len(listed["ProvisionedConcurrencyConfigs"]) == 1
    cli.run("lambda", "delete-provisioned-concurrency-config", "--function-name", name,
            "--qualifier", "1")
    p = cli.run("lambda", "get-provisioned-concurrency-config", "--function-name", name,
                "--qualifier", "1", check=False)
    assert p.returncode != 0 and "ProvisionedConcurrencyConfigNotFoundException" in p.stderr


def test_the_nimbus_cli_publishes_aliases_and_sets_concurrency(server, functions):
    name = unique("nimbuscli")
    functions.python(SLEEPER, name=name)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and not k.startswith("NIMBUS_")}
    env.update(NIMBUS_URL=server.url, AWS_ACCESS_KEY_ID=ACCESS_KEY,
               AWS_SECRET_ACCESS_KEY=SECRET_KEY)

    def nimbus(*args):
        p = subprocess.run([str(server_binary()), *args], env=env, capture_output=True,
                           text=True, timeout=120)
        assert p.returncode == 0, f"nimbus {' '.join(args)} failed:\n{p.stderr}"
        return p.stdout

    assert f"published {name} version 1" in nimbus("function", "publish", name)
    assert "created" in nimbus("function", "alias", name, "live", "--version", "1")
    listing = nimbus("function", "versions", name)
    assert "$LATEST" in listing and "live" in listing
    out = nimbus("function", "concurrency", name, "--reserved", "3")
    assert "reserved concurrency: 3" in out
    out = nimbus("function", "concurrency", name, "-q", "live", "--provisioned", "1", "--wait")
    assert "provisioned live: 1 requested, 1 allocated, READY" in out
    body = json.loads(nimbus("invoke", name, "-q", "live", "--quiet"))
    assert body == {"init": "provisioned-concurrency", "version": "1"}
    out = nimbus("function", "concurrency", name, "-q", "live", "--provisioned", "0",
                 "--reserved", "none")
    assert "reserved concurrency: none" in out and "provisioned" not in out.replace(
        "reserved concurrency: none (shares the unreserved pool)", "")
