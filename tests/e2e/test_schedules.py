"""Schedules: EventBridge rules (`aws events`, boto3 `events`) and
EventBridge Scheduler (boto3 `scheduler`) firing Lambda functions.

The servers here run with `--schedule-time-scale 60`: a schedule minute
passes every real second, so `rate(1 minute)` fires about once a second.
What a function received is read back from its CloudWatch logs, as a user
would check it."""

import datetime
import json
import re
import time

import pytest
from botocore.exceptions import ClientError

from conftest import (ACCOUNT, REGION, ROLE, PY_RUNTIME, Cli, Server, py_zip, run_nimbus, unique,
                      wait_for)

SCALE = ["--schedule-time-scale", "60"]

RECORDER = """import json

def lambda_handler(event, context):
    print("EVENT " + json.dumps(event, sort_keys=True))
    return "ok"
"""

SCHEDULER_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "scheduler.amazonaws.com"},
     "Action": "sts:AssumeRole"}]}


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("sched") / "data", SCALE).start()
    yield srv
    srv.kill()


def fn_arn(name):
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"


def make_recorder(srv, prefix="sched"):
    name = unique(prefix)
    lam = srv.client("lambda")
    lam.create_function(FunctionName=name, Runtime=PY_RUNTIME, Role=ROLE,
                        Handler="lambda_function.lambda_handler",
                        Code={"ZipFile": py_zip(RECORDER)})
    lam.get_waiter("function_active_v2").wait(FunctionName=name,
                                             WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    return name


def received(srv, name):
    """(events the function printed, START lines) from its log group."""
    logs = srv.client("logs")
    try:
        out = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}")
    except ClientError:
        return [], 0
    messages = [e["message"] for e in out["events"]]
    while out.get("nextToken"):
        out = logs.filter_log_events(logGroupName=f"/aws/lambda/{name}",
                                     nextToken=out["nextToken"])
        messages += [e["message"] for e in out["events"]]
    events = [json.loads(m.split("EVENT ", 1)[1]) for m in messages if "EVENT " in m]
    starts = sum(1 for m in messages if m.startswith("START RequestId"))
    return events, starts


def settled(srv, name, quiet=2.0, timeout=20):
    """The function's events once no new one has arrived for `quiet`
    seconds (deliveries handed off before a disable may still be running)."""
    deadline = time.monotonic() + timeout
    last = received(srv, name)
    while True:
        time.sleep(quiet)
        now = received(srv, name)
        if len(now[0]) == len(last[0]) and now[1] == last[1]:
            return now
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} kept receiving events after its schedule stopped")
        last = now


def tick_times(envelopes):
    return [datetime.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%SZ") for e in envelopes]


def check_envelopes(envelopes, rule_arn):
    for e in envelopes:
        assert set(e) == {"version", "id", "detail-type", "source", "account", "time",
                          "region", "resources", "detail"}, e
        assert (e["version"], e["detail-type"], e["source"]) == ("0", "Scheduled Event",
                                                                 "aws.events")
        assert (e["account"], e["region"]) == (ACCOUNT, REGION)
        assert e["resources"] == [rule_arn] and e["detail"] == {}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e["time"]), e["time"]
        assert re.fullmatch(r"[0-9a-f-]{36}", e["id"])
    times = tick_times(envelopes)
    # Exactly one delivery per tick, ticks a whole number of minutes apart.
    assert len(set(times)) == len(times), sorted(times)
    ordered = sorted(times)
    for a, b in zip(ordered, ordered[1:]):
        assert (b - a).total_seconds() % 60 == 0, (a, b)
    return ordered


def test_a_rate_rule_fires_its_function_once_per_tick(fast, tmp_path):
    name = make_recorder(fast)
    cli = Cli(fast, tmp_path)
    rule = unique("every-minute")
    created = cli.json("events", "put-rule", "--name", rule,
                       "--schedule-expression", "rate(1 minute)")
    rule_arn = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule}"
    assert created["RuleArn"] == rule_arn
    cli.json("lambda", "add-permission", "--function-name", name, "--statement-id", "events",
             "--action", "lambda:InvokeFunction", "--principal", "events.amazonaws.com",
             "--source-arn", rule_arn)
    put = cli.json("events", "put-targets", "--rule", rule,
                   "--targets", f"Id=recorder,Arn={fn_arn(name)}")
    assert put["FailedEntryCount"] == 0
    started = time.monotonic()

    wait_for(lambda: len(received(fast, name)[0]) >= 4, timeout=30, what="four ticks")
    cli.json("events", "disable-rule", "--name", rule)
    elapsed = time.monotonic() - started
    # Disabled: deliveries already handed off finish, then nothing more.
    envelopes, starts = settled(fast, name)
    ordered = check_envelopes(envelopes, rule_arn)
    # One invocation per tick, and no more ticks than schedule minutes passed.
    assert starts == len(envelopes)
    assert 4 <= len(ordered) <= elapsed + 2

    described = cli.json("events", "describe-rule", "--name", rule)
    assert described["State"] == "DISABLED"
    assert described["ScheduleExpression"] == "rate(1 minute)"
    targets = cli.json("events", "list-targets-by-rule", "--rule", rule)["Targets"]
    assert targets == [{"Id": "recorder", "Arn": fn_arn(name)}]

    # A rule with targets cannot be deleted, as in AWS.
    events = fast.client("events")
    with pytest.raises(ClientError) as e:
        events.delete_rule(Name=rule)
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert e.value.response["Error"]["Message"] == "Rule can't be deleted since it has targets."
    events.remove_targets(Rule=rule, Ids=["recorder"])
    events.delete_rule(Name=rule)
    with pytest.raises(ClientError) as e:
        events.describe_rule(Name=rule)
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"


INVOKE_ANY_FUNCTION = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "lambda:InvokeFunction",
     "Resource": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:*"}]}


def scheduler_role(srv, name="scheduler-e2e-role", may_invoke=True):
    """A role Scheduler may assume; Scheduler invokes as this role, so it
    needs lambda:InvokeFunction (as on AWS), unless `may_invoke` is False."""
    iam = srv.client("iam")
    try:
        iam.get_role(RoleName=name)
    except ClientError:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(SCHEDULER_TRUST))
        if may_invoke:
            iam.put_role_policy(RoleName=name, PolicyName="invoke",
                                PolicyDocument=json.dumps(INVOKE_ANY_FUNCTION))
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


def test_a_schedule_invokes_with_its_role_permissions(fast):
    """Scheduler assumes the schedule's role to invoke: a role without
    lambda:InvokeFunction gets nothing delivered (the tick is dead-lettered),
    and once the role may invoke, the next ticks arrive. No resource policy
    on the function is involved."""
    name = make_recorder(fast, "schedrole")
    role = scheduler_role(fast, "scheduler-no-invoke", may_invoke=False)
    sch = fast.client("scheduler")
    before = metric(fast, "nimbus_schedule_dead_letters_total")
    sch.create_schedule(
        Name="as-role", ScheduleExpression="rate(1 minute)", FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": fn_arn(name), "RoleArn": role, "Input": '{"as": "role"}',
                "RetryPolicy": {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60}})
    wait_for(lambda: metric(fast, "nimbus_schedule_dead_letters_total") > before, timeout=15,
             what="the refused tick to be dead-lettered")
    assert received(fast, name)[0] == []
    fast.client("iam").put_role_policy(RoleName="scheduler-no-invoke", PolicyName="invoke",
                                       PolicyDocument=json.dumps(INVOKE_ANY_FUNCTION))
    wait_for(lambda: {"as": "role"} in received(fast, name)[0], timeout=20,
             what="a tick delivered once the role may invoke")
    sch.delete_schedule(Name="as-role")


def test_a_schedule_delivers_its_input_and_one_time_schedules_delete_themselves(fast):
    name = make_recorder(fast)
    role = scheduler_role(fast)
    sch = fast.client("scheduler")
    payload = json.dumps({"greeting": "hello from the scheduler", "n": 1})
    arn = sch.create_schedule(
        Name="hello-every-minute", ScheduleExpression="rate(1 minute)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": fn_arn(name), "RoleArn": role, "Input": payload,
                "RetryPolicy": {"MaximumRetryAttempts": 3, "MaximumEventAgeInSeconds": 600}},
    )["ScheduleArn"]
    assert arn == f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/default/hello-every-minute"
    got = sch.get_schedule(Name="hello-every-minute")
    assert got["State"] == "ENABLED" and got["GroupName"] == "default"
    assert got["Target"]["Input"] == payload and got["Target"]["RoleArn"] == role
    assert got["Target"]["RetryPolicy"] == {"MaximumRetryAttempts": 3,
                                            "MaximumEventAgeInSeconds": 600}
    assert got["FlexibleTimeWindow"] == {"Mode": "OFF"}

    events = wait_for(lambda: received(fast, name)[0], timeout=20, what="the input")
    assert events[0] == json.loads(payload)

    # A one-time schedule three schedule-minutes from now (the schedule
    # clock's now is the CreationDate of what was just created).
    now = got["CreationDate"].astimezone(datetime.timezone.utc)
    when = (now + datetime.timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%S")
    sch.create_schedule(
        Name="once", ScheduleExpression=f"at({when})", FlexibleTimeWindow={"Mode": "OFF"},
        ActionAfterCompletion="DELETE",
        Target={"Arn": fn_arn(name), "RoleArn": role, "Input": '{"once": true}'})

    def gone():
        try:
            sch.get_schedule(Name="once")
            return False
        except ClientError as e:
            return e.response["Error"]["Code"] == "ResourceNotFoundException"
    wait_for(gone, timeout=30, what="the one-time schedule to complete")
    wait_for(lambda: {"once": True} in received(fast, name)[0], timeout=15, what="at() input")

    listed = sch.list_schedules(NamePrefix="hello-")["Schedules"]
    assert [s["Name"] for s in listed] == ["hello-every-minute"]
    assert listed[0]["Target"] == {"Arn": fn_arn(name)}
    assert sch.list_schedules(State="DISABLED")["Schedules"] == []
    # Disable through UpdateSchedule (it replaces the whole definition).
    sch.update_schedule(Name="hello-every-minute", ScheduleExpression="rate(1 minute)",
                        FlexibleTimeWindow={"Mode": "OFF"}, State="DISABLED",
                        Target={"Arn": fn_arn(name), "RoleArn": role, "Input": payload})
    assert [s["Name"] for s in sch.list_schedules(State="DISABLED")["Schedules"]] == [
        "hello-every-minute"]
    settled(fast, name, quiet=2.5)
    assert [g["Name"] for g in sch.list_schedule_groups()["ScheduleGroups"]] == ["default"]
    assert sch.get_schedule_group(Name="default")["State"] == "ACTIVE"
    sch.delete_schedule(Name="hello-every-minute")
    assert sch.list_schedules()["Schedules"] == []


def test_invalid_expressions_and_missing_things_get_aws_errors(fast):
    sch = fast.client("scheduler")
    events = fast.client("events")
    role = scheduler_role(fast)
    target = {"Arn": fn_arn("nothing"), "RoleArn": role}

    def sched_error(**kw):
        with pytest.raises(ClientError) as e:
            sch.create_schedule(FlexibleTimeWindow={"Mode": "OFF"}, Target=target, **kw)
        return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]

    for bad in ["rate(1 minutes)", "rate(5 minute)", "cron(0 12 * * * *)",
                "cron(0 12 * * ?)", "at(2026-02-30T00:00:00)", "every day"]:
        assert sched_error(Name="bad", ScheduleExpression=bad) == (
            "ValidationException", f"Invalid Schedule Expression {bad}.")
        with pytest.raises(ClientError) as e:
            events.put_rule(Name="bad", ScheduleExpression=bad)
        assert e.value.response["Error"]["Code"] == "ValidationException"
        assert e.value.response["Error"]["Message"] == "Parameter ScheduleExpression is not valid."
    code, _ = sched_error(Name="tz", ScheduleExpression="cron(0 9 * * ? *)",
                          ScheduleExpressionTimezone="Mars/Olympus")
    assert code == "ValidationException"
    # A role Scheduler may not assume.
    with pytest.raises(ClientError) as e:
        sch.create_schedule(Name="norole", ScheduleExpression="rate(1 hour)",
                            FlexibleTimeWindow={"Mode": "OFF"},
                            Target={"Arn": fn_arn("x"), "RoleArn": ROLE})
    assert e.value.response["Error"]["Code"] == "ValidationException"

    sch.create_schedule(Name="dup", ScheduleExpression="cron(0 9 ? * MON-FRI *)",
                        ScheduleExpressionTimezone="Europe/Berlin",
                        FlexibleTimeWindow={"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 15},
                        Target=target)
    assert sched_error(Name="dup", ScheduleExpression="rate(1 hour)")[0] == "ConflictException"
    with pytest.raises(ClientError) as e:
        sch.get_schedule(Name="missing")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        sch.delete_schedule(Name="missing")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    sch.delete_schedule(Name="dup")
    with pytest.raises(ClientError) as e:
        events.describe_rule(Name="missing")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        events.put_targets(Rule="missing", Targets=[{"Id": "1", "Arn": fn_arn("x")}])
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    # Paging through ListRules.
    for i in range(3):
        events.put_rule(Name=f"page-{i}", ScheduleExpression="cron(0 0 1 1 ? 2199)")
    first = events.list_rules(NamePrefix="page-", Limit=2)
    assert [r["Name"] for r in first["Rules"]] == ["page-0", "page-1"]
    rest = events.list_rules(NamePrefix="page-", Limit=2, NextToken=first["NextToken"])
    assert [r["Name"] for r in rest["Rules"]] == ["page-2"] and "NextToken" not in rest
    for i in range(3):
        events.delete_rule(Name=f"page-{i}")


def test_a_restart_fires_no_tick_twice_and_only_the_latest_missed_one(own_server, tmp_path):
    data = tmp_path / "data"
    srv = own_server(data, SCALE)
    name = make_recorder(srv, "restart")
    events = srv.client("events")
    rule_arn = events.put_rule(Name="survivor", ScheduleExpression="rate(1 minute)")["RuleArn"]
    srv.client("lambda").add_permission(
        FunctionName=name, StatementId="events", Action="lambda:InvokeFunction",
        Principal="events.amazonaws.com", SourceArn=rule_arn)
    events.put_targets(Rule="survivor", Targets=[{"Id": "t", "Arn": fn_arn(name)}])
    wait_for(lambda: len(received(srv, name)[0]) >= 3, timeout=30, what="three ticks")
    assert srv.stop() == 0
    time.sleep(5)  # about five schedule minutes with the server down

    srv2 = own_server(data, SCALE)
    before = len(received(srv2, name)[0])
    wait_for(lambda: len(received(srv2, name)[0]) >= before + 3, timeout=30,
             what="ticks after the restart")
    srv2.client("events").disable_rule(Name="survivor")
    envelopes, starts = settled(srv2, name)
    ordered = check_envelopes(envelopes, rule_arn)
    assert starts == len(envelopes)
    # The downtime shows as a gap of several minutes: the missed ticks were
    # not fired one after another on restart (that would leave no gap).
    gaps = [(b - a).total_seconds() for a, b in zip(ordered, ordered[1:])]
    assert max(gaps) >= 180, gaps
    # The most recent missed tick was fired, once, and the log says so.
    log = srv2.log_path.read_text(errors="replace")
    m = re.search(r"missed ticks.*firing only the most recent, (\S+Z)", log)
    assert m, log[-3000:]
    assert m.group(1) in [e["time"] for e in envelopes]


def metric(srv, name):
    import urllib.request
    with urllib.request.urlopen(srv.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} (\d+)$", text, re.M)
    assert m, text[-2000:]
    return int(m.group(1))


def test_a_delivery_that_keeps_failing_is_dead_lettered(fast):
    """A schedule whose function does not exist: the hand-off fails, is not
    retried past MaximumRetryAttempts, and lands in the dead letters."""
    sch = fast.client("scheduler")
    before = metric(fast, "nimbus_schedule_dead_letters_total")
    fired = metric(fast, "nimbus_schedule_ticks_fired_total")
    sch.create_schedule(
        Name="to-nowhere", ScheduleExpression="rate(1 minute)",
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": fn_arn("does-not-exist"), "RoleArn": scheduler_role(fast),
                "RetryPolicy": {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60},
                "DeadLetterConfig": {"Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:dlq"}})
    wait_for(lambda: metric(fast, "nimbus_schedule_dead_letters_total") > before, timeout=15,
             what="a dead letter")
    sch.delete_schedule(Name="to-nowhere")
    assert metric(fast, "nimbus_schedule_ticks_fired_total") > fired
    # The DeadLetterConfig's SQS ARN names a queue of nimbus's dead-letter
    # store, where `nimbus dlq list` shows the tick for replay.
    p = run_nimbus(fast, "dlq", "list", "--queue", "dlq", "--json")
    letters = json.loads(p.stdout)["deadLetters"]
    assert letters and all(d["functionName"] == "does-not-exist" and d["queue"] == "dlq"
                           for d in letters), letters
    assert "scheduled delivery failed for good" in letters[0]["reason"], letters[0]
