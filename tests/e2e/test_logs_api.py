"""Function logs through the CloudWatch Logs API (boto3 and `aws logs`).
The log writer is asynchronous, so reads poll briefly."""

import json
import re
import time

import pytest

from conftest import PY_RUNTIME, ROLE, invoke, py_zip, unique, wait_for

PRINTER = """def lambda_handler(event, context):
    print("log line from", event["n"])
    return event["n"]
"""

STREAM_RE = re.compile(r"^\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}$")


@pytest.fixture(scope="module")
def logged_function(lam):
    """A function invoked twice (one cold, one warm environment); returns
    its name, group and request ids."""
    name = unique("logs")
    lam.create_function(FunctionName=name, Runtime=PY_RUNTIME, Role=ROLE,
                        Handler="lambda_function.lambda_handler",
                        Code={"ZipFile": py_zip(PRINTER)})
    ids = []
    for n in (1, 2):
        resp, body, _ = invoke(lam, name, {"n": n}, tail=False)
        assert body == n
        ids.append(resp["ResponseMetadata"]["RequestId"])
    yield name, f"/aws/lambda/{name}", ids
    lam.delete_function(FunctionName=name)


def _all_events(logs, group, stream):
    return logs.get_log_events(logGroupName=group, logStreamName=stream,
                               startFromHead=True)["events"]


def test_describe_log_groups_and_streams(logs, logged_function):
    name, group, ids = logged_function

    def streams():
        try:
            return logs.describe_log_streams(logGroupName=group)["logStreams"]
        except logs.exceptions.ResourceNotFoundException:
            return None

    found = wait_for(streams, what=f"a log stream in {group}")
    assert len(found) == 1, "both invocations ran in the one warm environment"
    stream = found[0]
    assert STREAM_RE.match(stream["logStreamName"]), stream["logStreamName"]
    assert stream["creationTime"] > 0
    groups = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    assert [g["logGroupName"] for g in groups] == [group]
    assert groups[0]["arn"].startswith("arn:aws:logs:")

    # Newest-first ordering as `aws logs tail` asks for it.
    latest = logs.describe_log_streams(logGroupName=group, orderBy="LastEventTime",
                                       descending=True, limit=1)["logStreams"]
    assert latest[0]["logStreamName"] == stream["logStreamName"]


def test_get_log_events(logs, logged_function):
    name, group, ids = logged_function

    def complete():
        try:
            s = logs.describe_log_streams(logGroupName=group)["logStreams"]
        except logs.exceptions.ResourceNotFoundException:
            return None
        if not s:
            return None
        msgs = [e["message"] for e in _all_events(logs, group, s[0]["logStreamName"])]
        return msgs if any(m.startswith(f"REPORT RequestId: {ids[1]}") for m in msgs) else None

    msgs = wait_for(complete, what="both invocations' REPORT lines")
    text = [m.rstrip("\n") for m in msgs]
    for rid in ids:
        assert f"START RequestId: {rid} Version: $LATEST" in text
        assert f"END RequestId: {rid}" in text
        assert any(m.startswith(f"REPORT RequestId: {rid}\tDuration: ") for m in text)
    assert "log line from 1" in text and "log line from 2" in text
    # In order: START, the output, END, REPORT.
    i = text.index(f"START RequestId: {ids[0]} Version: $LATEST")
    assert text.index("log line from 1") > i
    assert text.index(f"END RequestId: {ids[0]}") > text.index("log line from 1")
    assert text.index(f"START RequestId: {ids[1]} Version: $LATEST") > text.index(f"END RequestId: {ids[0]}")


def test_filter_log_events(logs, logged_function):
    name, group, ids = logged_function

    def reports():
        try:
            ev = logs.filter_log_events(logGroupName=group, filterPattern="REPORT")["events"]
        except logs.exceptions.ResourceNotFoundException:
            return None
        return ev if len(ev) >= 2 else None

    events = wait_for(reports, what="REPORT events")
    assert all("REPORT" in e["message"] for e in events)
    assert {e["message"].split()[2] for e in events} >= set(ids)
    for e in events:
        assert e["logStreamName"] and e["timestamp"] > 0

    starts = logs.filter_log_events(logGroupName=group, filterPattern="START")["events"]
    assert {e["message"].split()[2] for e in starts} >= set(ids)
    everything = logs.filter_log_events(logGroupName=group)["events"]
    assert len(everything) >= 8
    stamps = [e["timestamp"] for e in everything]
    assert stamps == sorted(stamps)
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.filter_log_events(logGroupName="/aws/lambda/" + unique("nothing-here"))


def test_aws_logs_cli(cli, logs, logged_function):
    name, group, ids = logged_function
    wait_for(lambda: logs.filter_log_events(logGroupName=group, filterPattern="REPORT")["events"],
             what="REPORT events")
    has_tail = cli.run("logs", "tail", "help", check=False).returncode == 0 and cli.v2
    if has_tail:
        out = cli.run("logs", "tail", group, "--since", "1h", "--format", "short").stdout
        lines = out.splitlines()
    else:
        # CLI v1 has no `aws logs tail`: filter-log-events is its equivalent.
        out = cli.json("logs", "filter-log-events", "--log-group-name", group)
        lines = [e["message"] for e in out["events"]]
    for rid in ids:
        assert any(f"START RequestId: {rid}" in l for l in lines), lines
        assert any(f"REPORT RequestId: {rid}" in l for l in lines), lines
    out = cli.json("logs", "describe-log-streams", "--log-group-name", group)
    assert len(out["logStreams"]) == 1


def test_logs_written_by_clients(logs):
    """PutLogEvents from an SDK (what a function's own logging library does)."""
    group = "/e2e/" + unique("app")
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="s1")
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName=group, logStreamName="s1",
                        logEvents=[{"timestamp": now, "message": "first"},
                                   {"timestamp": now + 1, "message": json.dumps({"k": "v"})}])
    got = logs.get_log_events(logGroupName=group, logStreamName="s1", startFromHead=True)
    assert [e["message"] for e in got["events"]] == ["first", '{"k": "v"}']
    with pytest.raises(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName=group)
