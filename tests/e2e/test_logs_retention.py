"""Log retention: PutRetentionPolicy / DeleteRetentionPolicy through boto3
and `aws logs`, `retentionInDays` in DescribeLogGroups, CloudWatch's
allowed values, and the background sweep that deletes expired events (a
server of its own, sweeping every second)."""

import time

import pytest
from botocore.exceptions import ClientError

from conftest import Server, error_code, unique, wait_for

ALLOWED = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
           2557, 2922, 3288, 3653]
DAY_MS = 86_400_000


def describe(logs, group):
    found = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    return next(g for g in found if g["logGroupName"] == group)


@pytest.fixture
def group(logs):
    name = "/nimbus/e2e/" + unique("retention")
    logs.create_log_group(logGroupName=name)
    yield name
    try:
        logs.delete_log_group(logGroupName=name)
    except ClientError:
        pass


def test_put_describe_delete_with_boto3(logs, group):
    assert "retentionInDays" not in describe(logs, group), "new groups keep events forever"
    logs.put_retention_policy(logGroupName=group, retentionInDays=14)
    assert describe(logs, group)["retentionInDays"] == 14
    logs.put_retention_policy(logGroupName=group, retentionInDays=3653)
    assert describe(logs, group)["retentionInDays"] == 3653
    logs.delete_retention_policy(logGroupName=group)
    assert "retentionInDays" not in describe(logs, group)
    # Deleting again is fine, as on CloudWatch.
    logs.delete_retention_policy(logGroupName=group)


def test_every_allowed_value_and_no_other(logs, group):
    for days in ALLOWED:
        logs.put_retention_policy(logGroupName=group, retentionInDays=days)
    assert describe(logs, group)["retentionInDays"] == 3653
    for days in (0, 2, 10, 366, 3654, -7):
        with pytest.raises(ClientError) as e:
            logs.put_retention_policy(logGroupName=group, retentionInDays=days)
        assert error_code(e) == "InvalidParameterException"
        assert e.value.response["Error"]["Message"] == (
            f"1 validation error detected: Value '{days}' at 'retentionInDays' failed to satisfy "
            "constraint: Member must satisfy enum value set: "
            "[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, "
            "2557, 2922, 3288, 3653]")
    assert describe(logs, group)["retentionInDays"] == 3653, "a refused value changes nothing"


def test_missing_group(logs):
    missing = "/nimbus/e2e/" + unique("missing")
    for call in (lambda: logs.put_retention_policy(logGroupName=missing, retentionInDays=1),
                 lambda: logs.delete_retention_policy(logGroupName=missing)):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "ResourceNotFoundException"
        assert e.value.response["Error"]["Message"] == "The specified log group does not exist."


def test_the_setting_goes_with_its_group(logs):
    name = "/nimbus/e2e/" + unique("recreated")
    logs.create_log_group(logGroupName=name)
    logs.put_retention_policy(logGroupName=name, retentionInDays=5)
    logs.delete_log_group(logGroupName=name)
    logs.create_log_group(logGroupName=name)
    assert "retentionInDays" not in describe(logs, name)
    logs.delete_log_group(logGroupName=name)


def test_put_describe_delete_with_the_aws_cli(cli, logs, group):
    cli.run("logs", "put-retention-policy", "--log-group-name", group,
            "--retention-in-days", "7")
    out = cli.json("logs", "describe-log-groups", "--log-group-name-prefix", group)
    assert [(g["logGroupName"], g["retentionInDays"]) for g in out["logGroups"]] == [(group, 7)]

    bad = cli.run("logs", "put-retention-policy", "--log-group-name", group,
                  "--retention-in-days", "8", check=False)
    assert bad.returncode != 0
    assert "InvalidParameterException" in bad.stderr
    assert "Value '8' at 'retentionInDays' failed to satisfy constraint" in bad.stderr
    assert describe(logs, group)["retentionInDays"] == 7

    cli.run("logs", "delete-retention-policy", "--log-group-name", group)
    out = cli.json("logs", "describe-log-groups", "--log-group-name-prefix", group)
    assert "retentionInDays" not in out["logGroups"][0]


@pytest.fixture
def sweeping_server(tmp_path):
    srv = Server(tmp_path / "data", ["--log-retention-sweep", "1"]).start()
    yield srv
    srv.kill()


def test_the_sweep_deletes_expired_events_and_their_bytes(sweeping_server):
    logs = sweeping_server.client("logs")
    group, stream = "/nimbus/e2e/swept", "s"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName=stream)
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[
        {"timestamp": now - 3 * DAY_MS, "message": "three days old"},
        {"timestamp": now - 2 * DAY_MS, "message": "two days old"},
        {"timestamp": now - 1000, "message": "fresh"},
    ])
    # Kept forever until a policy says otherwise.
    time.sleep(2)
    assert len(logs.get_log_events(logGroupName=group, logStreamName=stream,
                                   startFromHead=True)["events"]) == 3
    before = describe(logs, group)["storedBytes"]
    assert before == sum(len(m) + 26 for m in ("three days old", "two days old", "fresh"))

    logs.put_retention_policy(logGroupName=group, retentionInDays=3)
    time.sleep(2)
    events = logs.get_log_events(logGroupName=group, logStreamName=stream,
                                 startFromHead=True)["events"]
    assert [e["message"] for e in events] == ["two days old", "fresh"], "3 days: one expired"

    logs.put_retention_policy(logGroupName=group, retentionInDays=1)

    def swept():
        ev = logs.get_log_events(logGroupName=group, logStreamName=stream,
                                 startFromHead=True)["events"]
        return [e["message"] for e in ev] if len(ev) == 1 else None
    assert wait_for(swept, timeout=20, what="the sweep") == ["fresh"]
    assert describe(logs, group)["storedBytes"] == len("fresh") + 26
    s = logs.describe_log_streams(logGroupName=group)["logStreams"][0]
    assert s["storedBytes"] == len("fresh") + 26
    assert s["firstEventTimestamp"] == s["lastEventTimestamp"] == now - 1000
