"""Asynchronous invocation: the durable queue, Lambda's retries, event
invoke configurations (boto3 and the AWS CLI), destinations (functions and
nimbus's dead-letter store), `nimbus dlq list/replay`, recursive loop
detection, the queue's metrics, and no accepted event lost to `kill -9`.

The servers here run with `--async-retry-base-ms 300`: the retries Lambda
spaces by about 1 and 2 minutes come 0.3 and 0.6 s apart."""

import hashlib
import json
import os
import re
import signal
import threading
import time
import urllib.request

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ParamValidationError

from conftest import (ACCOUNT, LAMBDA_TRUST, BASIC_EXECUTION, REGION, ROLE, Functions, Server,
                      error_code, py_zip, run_nimbus, unique, wait_for)

RETRY_BASE_MS = 300


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("async") / "data",
               ["--async-retry-base-ms", str(RETRY_BASE_MS)]).start()
    yield s
    s.kill()


@pytest.fixture(scope="module")
def alam(srv):
    return srv.client("lambda")


@pytest.fixture(scope="module")
def alogs(srv):
    return srv.client("logs")


@pytest.fixture
def fns(alam):
    f = Functions(alam)
    yield f
    f.cleanup()


def fn_arn(name, qualifier=None):
    base = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


def log_messages(logs, name):
    """Every stored log line of a function, oldest first."""
    out, kw = [], {"logGroupName": f"/aws/lambda/{name}"}
    while True:
        try:
            r = logs.filter_log_events(**kw)
        except ClientError as e:
            if error_code_of(e) == "ResourceNotFoundException":
                return []
            raise
        out += [e["message"] for e in r["events"]]
        if not r.get("nextToken"):
            return out
        kw["nextToken"] = r["nextToken"]


def error_code_of(e):
    return e.response["Error"]["Code"]


def marked(logs, name, prefix):
    """The text after `prefix` on each log line that starts with it."""
    return [m[len(prefix):].strip() for m in log_messages(logs, name) if m.startswith(prefix)]


def nimbus(srv, *args, check=True):
    return run_nimbus(srv, *args, check=check)


def dead_letters(srv, queue=None):
    args = ["dlq", "list", "--json"] + (["--queue", queue] if queue else [])
    return json.loads(nimbus(srv, *args).stdout)["deadLetters"]


def metric(srv, name):
    with urllib.request.urlopen(srv.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def invoke_event(lam, name, event, **kw):
    r = lam.invoke(FunctionName=name, InvocationType="Event", Payload=json.dumps(event), **kw)
    assert r["StatusCode"] == 202
    return r["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]


ECHO = """
import json
def lambda_handler(event, context):
    print("RUN " + json.dumps(event, sort_keys=True))
    return {"echo": event}
"""

ALWAYS_FAILS = """
import json
def lambda_handler(event, context):
    print("RUN " + json.dumps(event, sort_keys=True))
    raise ValueError("nope: " + str(event.get("n")))
"""


def test_event_invoke_is_queued_and_runs(alam, alogs, fns):
    name = fns.python(ECHO, prefix="async-echo")["FunctionName"]
    request_id = invoke_event(alam, name, {"hello": "async"})
    assert re.fullmatch(r"[0-9a-f-]{36}", request_id)
    runs = wait_for(lambda: marked(alogs, name, "RUN"), what="the event's run")
    assert runs == ['{"hello": "async"}']
    starts = [m for m in log_messages(alogs, name) if m.startswith("START")]
    assert starts and request_id in starts[0], "the event runs with the request id Invoke returned"
    # The legacy InvokeAsync is queued the same way.
    r = alam.invoke_async(FunctionName=name, InvokeArgs=json.dumps({"legacy": 1}))
    assert r["Status"] == 202
    wait_for(lambda: '{"legacy": 1}' in marked(alogs, name, "RUN"), what="InvokeAsync's run")


def test_function_errors_are_retried_twice_then_dead_lettered(srv, alam, alogs, fns):
    name = fns.python(ALWAYS_FAILS, prefix="async-fail")["FunctionName"]
    request_id = invoke_event(alam, name, {"n": 1})
    letter = wait_for(lambda: [d for d in dead_letters(srv, "default")
                               if d["requestId"] == request_id], timeout=30,
                      what="the dead letter")[0]
    # Lambda's default: the first attempt and 2 retries, all with one request id.
    starts = [m for m in log_messages(alogs, name) if m.startswith("START")]
    assert len(starts) == 3 and all(request_id in s for s in starts), starts
    assert len(marked(alogs, name, "RUN")) == 3
    assert letter["functionName"] == name and letter["condition"] == "RetriesExhausted"
    assert json.loads(letter["payload"]) == {"n": 1}
    record = letter["record"]
    assert record["version"] == "1.0"
    assert record["requestContext"] == {"requestId": request_id,
                                        "functionArn": fn_arn(name, "$LATEST"),
                                        "condition": "RetriesExhausted",
                                        "approximateInvokeCount": 3}
    assert record["requestPayload"] == {"n": 1}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST",
                                         "functionError": "Unhandled"}
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert record["responsePayload"]["errorMessage"] == "nope: 1"


def test_retries_are_spaced_and_configurable(srv, alam, alogs, fns):
    name = fns.python(ALWAYS_FAILS, prefix="async-once")["FunctionName"]
    alam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)
    request_id = invoke_event(alam, name, {"n": 2})
    wait_for(lambda: [d for d in dead_letters(srv) if d["requestId"] == request_id],
             timeout=30, what="the dead letter")
    r = alogs.filter_log_events(logGroupName=f"/aws/lambda/{name}", filterPattern="START")
    times = [e["timestamp"] for e in r["events"]]
    assert len(times) == 2, "MaximumRetryAttempts 1: one retry"
    assert times[1] - times[0] >= RETRY_BASE_MS - 50, "the retry waits the backoff"

    # MaximumRetryAttempts 0: one attempt only.
    alam.update_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    request_id = invoke_event(alam, name, {"n": 3})
    letter = wait_for(lambda: [d for d in dead_letters(srv) if d["requestId"] == request_id],
                      timeout=30, what="the dead letter")[0]
    assert letter["record"]["requestContext"]["approximateInvokeCount"] == 1
    assert marked(alogs, name, "RUN").count('{"n": 3}') == 1


DESTINATION = """
import json
def lambda_handler(event, context):
    print("DEST " + json.dumps(event, sort_keys=True))
"""

SOMETIMES_FAILS = """
def lambda_handler(event, context):
    if event.get("fail"):
        raise RuntimeError("asked to fail")
    return {"ok": event["n"]}
"""


def test_function_destinations_receive_lambdas_records(alam, alogs, fns):
    dest = fns.python(DESTINATION, prefix="async-dest")["FunctionName"]
    src = fns.python(SOMETIMES_FAILS, prefix="async-src")["FunctionName"]
    cfg = alam.put_function_event_invoke_config(
        FunctionName=src, MaximumRetryAttempts=0,
        DestinationConfig={"OnSuccess": {"Destination": fn_arn(dest)},
                           "OnFailure": {"Destination": fn_arn(dest)}})
    assert cfg["DestinationConfig"]["OnFailure"]["Destination"] == fn_arn(dest)
    ok_id = invoke_event(alam, src, {"n": 1})
    fail_id = invoke_event(alam, src, {"n": 2, "fail": True})
    records = wait_for(lambda: (lambda r: r if len(r) == 2 else None)(
        [json.loads(t) for t in marked(alogs, dest, "DEST")]), timeout=30,
        what="two destination records")
    by_id = {r["requestContext"]["requestId"]: r for r in records}
    ok, failed = by_id[ok_id], by_id[fail_id]
    assert ok["requestContext"]["condition"] == "Success"
    assert ok["requestContext"]["functionArn"] == fn_arn(src, "$LATEST")
    assert ok["requestPayload"] == {"n": 1}
    assert ok["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert ok["responsePayload"] == {"ok": 1}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ok["timestamp"])
    assert failed["requestContext"]["condition"] == "RetriesExhausted"
    assert failed["requestContext"]["approximateInvokeCount"] == 1
    assert failed["responseContext"]["functionError"] == "Unhandled"
    assert failed["responsePayload"]["errorMessage"] == "asked to fail"


def test_sqs_destination_is_a_dead_letter_queue_and_replay_runs_it_again(srv, alam, alogs, fns):
    queue = unique("orders-dlq")
    name = fns.python(SOMETIMES_FAILS, prefix="async-dlq")["FunctionName"]
    alam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}"}})
    request_id = invoke_event(alam, name, {"n": 7, "fail": True})
    letter = wait_for(lambda: dead_letters(srv, queue), timeout=30, what="the dead letter")[0]
    assert letter["requestId"] == request_id and letter["queue"] == queue
    table = nimbus(srv, "dlq", "list", "--queue", queue).stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:3] == ["ID", "QUEUE", "FUNCTION"]
    assert row.split()[:4] == [str(letter["id"]), queue, name, request_id]
    assert not [d for d in dead_letters(srv, "default") if d["requestId"] == request_id]

    # Fix the function, replay the event: it runs again and succeeds.
    fixed = ("import json\ndef lambda_handler(event, context):\n"
             "    print('FIXED ' + json.dumps(event, sort_keys=True))\n")
    alam.update_function_code(FunctionName=name, ZipFile=py_zip(fixed))
    out = nimbus(srv, "dlq", "replay", str(letter["id"])).stdout
    assert f"replayed {letter['id']} as request" in out and "1 replayed" in out
    assert dead_letters(srv, queue) == []
    wait_for(lambda: marked(alogs, name, "FIXED") == ['{"fail": true, "n": 7}'],
             what="the replayed event's run")
    p = nimbus(srv, "dlq", "replay", "999999", check=False)
    assert p.returncode != 0 and "not found" in p.stderr

    # --all --queue replays a whole queue.
    invoke_event(alam, name, {"n": 8})
    alam.update_function_code(FunctionName=name, ZipFile=py_zip(SOMETIMES_FAILS))
    for n in (9, 10):
        invoke_event(alam, name, {"n": n, "fail": True})
    wait_for(lambda: len(dead_letters(srv, queue)) == 2, timeout=30, what="two dead letters")
    alam.update_function_code(FunctionName=name, ZipFile=py_zip(fixed))
    out = nimbus(srv, "dlq", "replay", "--all", "--queue", queue).stdout
    assert "2 replayed" in out
    wait_for(lambda: {'{"fail": true, "n": 9}', '{"fail": true, "n": 10}'}
             <= set(marked(alogs, name, "FIXED")), what="the replayed queue's runs")


def test_dead_letter_config_names_a_queue_of_the_store(srv, alam, fns):
    queue = unique("fn-dlq")
    target = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}"
    name = fns.python(SOMETIMES_FAILS, prefix="async-dlc",
                      DeadLetterConfig={"TargetArn": target})["FunctionName"]
    assert alam.get_function_configuration(FunctionName=name)["DeadLetterConfig"] == {
        "TargetArn": target}
    alam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    request_id = invoke_event(alam, name, {"n": 1, "fail": True})
    letter = wait_for(lambda: dead_letters(srv, queue), timeout=30, what="the dead letter")[0]
    assert letter["requestId"] == request_id and json.loads(letter["payload"])["n"] == 1
    with pytest.raises(ClientError) as e:
        alam.update_function_configuration(
            FunctionName=name, DeadLetterConfig={"TargetArn": "arn:aws:sns:us-east-1:000000000000:t"})
    assert error_code(e) == "InvalidParameterValueException"
    alam.update_function_configuration(FunctionName=name, DeadLetterConfig={})
    assert "DeadLetterConfig" not in alam.get_function_configuration(FunctionName=name)
    request_id = invoke_event(alam, name, {"n": 2, "fail": True})
    wait_for(lambda: [d for d in dead_letters(srv, "default") if d["requestId"] == request_id],
             timeout=30, what="the dead letter in queue default")


def test_event_invoke_config_api(alam, fns, srv):
    name = fns.python(ECHO, prefix="async-cfg")["FunctionName"]
    with pytest.raises(ClientError) as e:
        alam.get_function_event_invoke_config(FunctionName=name)
    assert error_code(e) == "ResourceNotFoundException"
    assert f"{fn_arn(name, '$LATEST')} doesn't have an EventInvokeConfig" in str(e.value)

    put = alam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1,
                                                MaximumEventAgeInSeconds=3600)
    assert put["FunctionArn"] == fn_arn(name, "$LATEST")
    assert (put["MaximumRetryAttempts"], put["MaximumEventAgeInSeconds"]) == (1, 3600)
    assert put["LastModified"].year >= 2024
    upd = alam.update_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnFailure": {"Destination": fn_arn("elsewhere")}})
    assert upd["MaximumRetryAttempts"] == 1, "Update keeps what it does not name"
    assert upd["DestinationConfig"]["OnFailure"]["Destination"] == fn_arn("elsewhere")
    # Put replaces the whole configuration.
    put = alam.put_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=60)
    assert "MaximumRetryAttempts" not in put
    assert put["DestinationConfig"]["OnFailure"] == {}

    alam.publish_version(FunctionName=name)
    alam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    alam.put_function_event_invoke_config(FunctionName=name, Qualifier="live",
                                          MaximumRetryAttempts=0)
    got = alam.get_function_event_invoke_config(FunctionName=f"{name}:live")
    assert got["FunctionArn"] == fn_arn(name, "live") and got["MaximumRetryAttempts"] == 0
    listed = alam.list_function_event_invoke_configs(FunctionName=name)
    arns = [c["FunctionArn"] for c in listed["FunctionEventInvokeConfigs"]]
    assert sorted(arns) == sorted([fn_arn(name, "$LATEST"), fn_arn(name, "live")])
    page = alam.list_function_event_invoke_configs(FunctionName=name, MaxItems=1)
    assert len(page["FunctionEventInvokeConfigs"]) == 1 and page["NextMarker"]
    rest = alam.list_function_event_invoke_configs(FunctionName=name, Marker=page["NextMarker"])
    assert len(rest["FunctionEventInvokeConfigs"]) == 1 and "NextMarker" not in rest
    alam.delete_function_event_invoke_config(FunctionName=name, Qualifier="live")
    with pytest.raises(ClientError) as e:
        alam.delete_function_event_invoke_config(FunctionName=name, Qualifier="live")
    assert error_code(e) == "ResourceNotFoundException"

    # AWS's validation.
    with pytest.raises(ClientError) as e:
        alam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=3)
    assert error_code(e) == "ValidationException"
    assert ("Value '3' at 'maximumRetryAttempts' failed to satisfy constraint: "
            "Member must have value less than or equal to 2") in str(e.value)
    with pytest.raises(ClientError) as e:
        alam.put_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=21601)
    assert "Member must have value less than or equal to 21600" in str(e.value)
    with pytest.raises(ParamValidationError):
        alam.put_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=59)
    raw = srv.client("lambda", parameter_validation=False)
    with pytest.raises(ClientError) as e:
        raw.put_function_event_invoke_config(FunctionName=name, MaximumEventAgeInSeconds=59,
                                             MaximumRetryAttempts=-1)
    assert error_code(e) == "ValidationException"
    assert "2 validation errors detected" in str(e.value)
    assert "Member must have value greater than or equal to 60" in str(e.value)
    for bad, message in [(fn_arn(name), "You can't specify the function as a destination for itself."),
                         ("arn:aws:sns:us-east-1:000000000000:topic", "is invalid"),
                         ("not-an-arn", "is invalid")]:
        with pytest.raises(ClientError) as e:
            alam.put_function_event_invoke_config(
                FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": bad}})
        assert error_code(e) == "InvalidParameterValueException", bad
        assert message in str(e.value)
    with pytest.raises(ClientError) as e:
        alam.put_function_event_invoke_config(FunctionName=name, Qualifier="nope",
                                              MaximumRetryAttempts=1)
    assert error_code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        alam.put_function_event_invoke_config(FunctionName=unique("missing"),
                                              MaximumRetryAttempts=1)
    assert error_code(e) == "ResourceNotFoundException"


def test_event_invoke_config_with_the_aws_cli(srv, fns, tmp_path):
    from conftest import Cli
    cli = Cli(srv, tmp_path)
    name = fns.python(ECHO, prefix="async-cli")["FunctionName"]
    dlq = f"arn:aws:sqs:{REGION}:{ACCOUNT}:cli-dlq"
    out = cli.json("lambda", "put-function-event-invoke-config", "--function-name", name,
                   "--maximum-retry-attempts", "1", "--maximum-event-age-in-seconds", "120",
                   "--destination-config", json.dumps({"OnFailure": {"Destination": dlq}}))
    assert out["FunctionArn"] == fn_arn(name, "$LATEST")
    assert out["DestinationConfig"]["OnFailure"]["Destination"] == dlq
    got = cli.json("lambda", "get-function-event-invoke-config", "--function-name", name)
    assert (got["MaximumRetryAttempts"], got["MaximumEventAgeInSeconds"]) == (1, 120)
    listed = cli.json("lambda", "list-function-event-invoke-configs", "--function-name", name)
    assert len(listed["FunctionEventInvokeConfigs"]) == 1
    p = cli.run("lambda", "put-function-event-invoke-config", "--function-name", name,
                "--maximum-retry-attempts", "5", check=False)
    assert p.returncode != 0 and "ValidationException" in p.stderr
    cli.run("lambda", "delete-function-event-invoke-config", "--function-name", name)
    p = cli.run("lambda", "get-function-event-invoke-config", "--function-name", name,
                check=False)
    assert p.returncode != 0 and "ResourceNotFoundException" in p.stderr


SELF_INVOKER = """
import json, os, boto3
lam = boto3.client("lambda")
def lambda_handler(event, context):
    hop = event.get("hop", 0) + 1
    print("HOP %d %s" % (hop, os.environ.get("_X_AMZN_TRACE_ID", "")))
    lam.invoke(FunctionName=context.function_name, InvocationType="Event",
               Payload=json.dumps({"hop": hop}))
"""


def lineage_key(arn):
    return hashlib.sha256(arn.encode()).hexdigest()[:8]


def test_a_recursive_loop_is_stopped_after_16_invocations(srv, alam, alogs, fns):
    iam = srv.client("iam")
    role = unique("loop-role")
    arn_role = iam.create_role(RoleName=role,
                               AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST))["Role"]["Arn"]
    iam.attach_role_policy(RoleName=role, PolicyArn=BASIC_EXECUTION)
    iam.put_role_policy(RoleName=role, PolicyName="invoke", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"}]}))
    name = fns.python(SELF_INVOKER, prefix="loop", Role=arn_role, Timeout=10)["FunctionName"]
    assert alam.get_function_recursion_config(FunctionName=name)["RecursiveLoop"] == "Terminate"
    stopped_before = metric(srv, "nimbus_async_recursive_loops_stopped_total")
    invoke_event(alam, name, {})
    letter = wait_for(lambda: [d for d in dead_letters(srv) if d["functionName"] == name],
                      timeout=60, what="the stopped loop's dead letter")[0]
    # Hops overlap (each invokes the next before it returns): order by hop.
    hops = sorted(marked(alogs, name, "HOP"), key=lambda h: int(h.split()[0]))
    assert [int(h.split()[0]) for h in hops] == list(range(1, 17)), hops
    # The runtime set _X_AMZN_TRACE_ID; boto3 sent it back; Lineage counted.
    key = lineage_key(fn_arn(name))
    assert f"Lineage={key}:0" in hops[0] and f"Lineage={key}:15" in hops[15]
    roots = {re.search(r"Root=([^;]+)", h).group(1) for h in hops}
    assert len(roots) == 1, "one chain, one trace root"
    assert letter["condition"] == "RecursiveInvocationDetected"
    assert "recursive loop" in letter["reason"]
    assert json.loads(letter["payload"]) == {"hop": 16}
    assert metric(srv, "nimbus_async_recursive_loops_stopped_total") == stopped_before + 1
    assert "recursive loop stopped" in srv.log_path.read_text()
    time.sleep(1)
    assert len(marked(alogs, name, "HOP")) == 16, "nothing ran after the stop"


def test_recursion_config_allow_and_a_simulated_lineage(srv, alam, alogs, fns):
    name = fns.python(ECHO, prefix="lineage")["FunctionName"]
    header = (f"Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0;"
              f"Lineage={lineage_key(fn_arn(name))}:15")

    def with_trace(params, **kw):
        params["headers"]["X-Amzn-Trace-Id"] = header

    client = srv.client("lambda")
    client.meta.events.register("before-call.lambda.Invoke", with_trace)
    request_id = invoke_event(client, name, {"deep": 1})
    wait_for(lambda: [d for d in dead_letters(srv) if d["requestId"] == request_id],
             what="the stopped event")
    assert marked(alogs, name, "RUN") == []

    put = alam.put_function_recursion_config(FunctionName=name, RecursiveLoop="Allow")
    assert put["RecursiveLoop"] == "Allow"
    assert alam.get_function_recursion_config(FunctionName=name)["RecursiveLoop"] == "Allow"
    invoke_event(client, name, {"deep": 2})
    wait_for(lambda: marked(alogs, name, "RUN") == ['{"deep": 2}'], what="the allowed run")
    with pytest.raises(ClientError) as e:
        srv.client("lambda", parameter_validation=False).put_function_recursion_config(
            FunctionName=name, RecursiveLoop="Sometimes")
    assert error_code(e) == "ValidationException"


def test_the_node_runtime_exposes_the_trace_header_with_its_lineage(alam, alogs, fns):
    from test_runtime_node import NODE_RUNTIME
    from conftest import make_zip
    code = ("exports.handler = async (event) => {\n"
            "  console.log('TRACE ' + process.env._X_AMZN_TRACE_ID);\n};\n")
    name = fns.create(make_zip({"index.js": code}), runtime=NODE_RUNTIME,
                      handler="index.handler", prefix="async-node")["FunctionName"]
    invoke_event(alam, name, {})
    trace = wait_for(lambda: [t for m in log_messages(alogs, name) if "TRACE " in m
                              for t in [m.split("TRACE ", 1)[1].strip()]], what="the trace line")[0]
    assert trace.startswith("Root=1-") and f"Lineage={lineage_key(fn_arn(name))}:0" in trace


def test_throttled_events_wait_and_run_when_capacity_returns(srv, alam, alogs, fns):
    name = fns.python(ECHO, prefix="async-throttle")["FunctionName"]
    alam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    throttles = metric(srv, "nimbus_async_throttle_retries_total")
    request_id = invoke_event(alam, name, {"held": True})
    wait_for(lambda: metric(srv, "nimbus_async_throttle_retries_total") >= throttles + 3,
             what="throttled attempts being retried")
    assert marked(alogs, name, "RUN") == []
    assert not [d for d in dead_letters(srv) if d["requestId"] == request_id], \
        "a throttle is not a failed attempt"
    alam.delete_function_concurrency(FunctionName=name)
    wait_for(lambda: marked(alogs, name, "RUN") == ['{"held": true}'], timeout=30,
             what="the event to run once capacity returns")


def test_queue_metrics(srv, alam, fns):
    name = fns.python(ALWAYS_FAILS, prefix="async-metrics")["FunctionName"]
    retries, dead = (metric(srv, "nimbus_async_retries_total"),
                     metric(srv, "nimbus_async_dead_lettered_total"))
    alam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)
    request_id = invoke_event(alam, name, {"n": 1})
    assert metric(srv, "nimbus_async_queue_depth") >= 1
    assert metric(srv, "nimbus_async_oldest_event_age_seconds") >= 0
    wait_for(lambda: [d for d in dead_letters(srv) if d["requestId"] == request_id],
             timeout=30, what="the dead letter")
    assert metric(srv, "nimbus_async_retries_total") == retries + 1
    assert metric(srv, "nimbus_async_dead_lettered_total") == dead + 1
    wait_for(lambda: metric(srv, "nimbus_async_queue_depth") == 0, what="an empty queue")


SLOW_COUNTER = """
import json, time
def lambda_handler(event, context):
    time.sleep(0.05)
    print("RUN %d" % event["n"])
"""


def test_kill_9_mid_drain_loses_no_accepted_event(own_server, tmp_path):
    data = tmp_path / "crash"
    args = ["--async-retry-base-ms", "200", "--concurrency", "4"]
    s = own_server(data, args)
    lam = s.client("lambda", max_pool_connections=16)
    name = unique("crash")
    lam.create_function(FunctionName=name, Runtime=os.environ.get("NIMBUS_E2E_RUNTIME",
                                                                  "python3.11"),
                        Role=ROLE, Handler="lambda_function.lambda_handler",
                        Code={"ZipFile": py_zip(SLOW_COUNTER)})
    total, accepted, lock = 300, set(), threading.Lock()
    half = threading.Event()

    def send(ns):
        c = s.client("lambda")
        for n in ns:
            try:
                c.invoke(FunctionName=name, InvocationType="Event",
                         Payload=json.dumps({"n": n}))
            except Exception:  # the server died under us: not accepted
                return
            with lock:
                accepted.add(n)
                if len(accepted) >= total // 2:
                    half.set()

    threads = [threading.Thread(target=send, args=(range(i, total, 8),)) for i in range(8)]
    for t in threads:
        t.start()
    logs = s.client("logs")
    # Kill while clients are still sending and the queue drains:
    # whatever got its 202 must run.
    assert half.wait(60), "half the events accepted"
    depth = metric(s, "nimbus_async_queue_depth")
    ran_before = len(marked(logs, name, "RUN"))
    os.killpg(s.proc.pid, signal.SIGKILL)
    s.proc.wait(10)
    s.proc = None
    for t in threads:
        t.join()
    assert depth > 0, "the server was killed mid-drain"
    assert total // 2 <= len(accepted) < total, "the kill came while clients were still sending"

    def kill(srv):
        os.killpg(srv.proc.pid, signal.SIGKILL)
        srv.proc.wait(10)
        srv.proc = None

    # The restarted server resumes the queue; kill it again mid-drain, once
    # it has made progress (its runs are in the logs).
    s1 = own_server(data, args)
    logs = s1.client("logs")
    wait_for(lambda: len(marked(logs, name, "RUN")) >= ran_before + 20, timeout=60,
             what="the resumed drain to progress")
    depth2 = metric(s1, "nimbus_async_queue_depth")
    ran_before2 = len(marked(logs, name, "RUN"))
    kill(s1)
    assert depth2 > 0, "the resumed server was killed mid-drain"

    s2 = own_server(data, args)
    logs = s2.client("logs")

    def ran():
        return {int(t) for t in marked(logs, name, "RUN")}

    done = wait_for(lambda: (lambda r: r if r >= accepted else None)(ran()), timeout=90,
                    what="every accepted event to run")
    # Events committed whose 202 the kill cut off may run too; nothing else.
    assert done >= accepted and done <= set(range(total))
    wait_for(lambda: metric(s2, "nimbus_async_queue_depth") == 0, what="an empty queue")
    runs = marked(logs, name, "RUN")
    assert s2.stop() == 0, "a drained server still stops cleanly on SIGTERM"
    print(f"crash test: {len(accepted)} of {total} accepted before the kill "
          f"(+{len(done - accepted)} committed without their 202), {len(runs)} runs "
          f"({len(runs) - len(done)} repeated); kill 1: depth {depth:.0f}, {ran_before} had run; "
          f"kill 2: depth {depth2:.0f}, {ran_before2} had run")


SLEEPER = """
import time
def lambda_handler(event, context):
    time.sleep(1)
    print("RUN %d" % event["n"])
"""


def test_sigterm_keeps_queued_events_for_the_next_start(own_server, tmp_path):
    data = tmp_path / "graceful"
    args = ["--async-retry-base-ms", "200", "--concurrency", "2"]
    s = own_server(data, args)
    lam = s.client("lambda")
    name = unique("graceful")
    lam.create_function(FunctionName=name, Runtime=os.environ.get("NIMBUS_E2E_RUNTIME",
                                                                  "python3.11"),
                        Role=ROLE, Handler="lambda_function.lambda_handler",
                        Code={"ZipFile": py_zip(SLEEPER)}, Timeout=5)
    for n in range(10):
        invoke_event(lam, name, {"n": n})
    wait_for(lambda: metric(s, "nimbus_async_in_flight") >= 1, what="attempts running")
    started = time.monotonic()
    assert s.stop() == 0, "SIGTERM with attempts running and events queued exits cleanly"
    assert time.monotonic() - started < 15
    s2 = own_server(data, args)
    logs = s2.client("logs")
    wait_for(lambda: {int(t) for t in marked(logs, name, "RUN")} >= set(range(10)), timeout=60,
             what="every event to run after the restart")
