"""The server process itself: persistence across a SIGTERM restart, idle
environment reaping (--keep-alive) and the account concurrency limit
(--concurrency). Each test runs its own server, so the shared one is left
alone."""

import os
import threading
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import (HELLO_EVENT, HELLO_WORLD, PY_RUNTIME, ROLE, invoke,
                      make_zip, report, wait_for)


def test_restart_keeps_functions(own_server, tmp_path):
    data = tmp_path / "data"
    srv = own_server(data)
    lam = srv.client()
    zip_bytes = make_zip({"lambda_function.py": HELLO_WORLD})
    lam.create_function(FunctionName="demo-function", Runtime=PY_RUNTIME, Role=ROLE,
                        Handler="lambda_function.lambda_handler", Code={"ZipFile": zip_bytes},
                        Environment={"Variables": {"KEPT": "yes"}}, MemorySize=256)
    _, body, _ = invoke(lam, "demo-function", HELLO_EVENT, tail=False)
    assert body == "value1"
    before = lam.get_function_configuration(FunctionName="demo-function")
    first_url = srv.url

    code = srv.stop()
    assert code == 0, f"nimbus exited {code} on SIGTERM"
    with pytest.raises(OSError):
        urllib.request.urlopen(first_url + "/_nimbus/health", timeout=2)

    srv2 = own_server(data)
    lam2 = srv2.client()
    after = lam2.get_function_configuration(FunctionName="demo-function")
    after.pop("ResponseMetadata")
    before.pop("ResponseMetadata")
    assert after == before
    assert [f["FunctionName"] for f in lam2.list_functions()["Functions"]] == ["demo-function"]
    got = lam2.get_function(FunctionName="demo-function")
    with urllib.request.urlopen(got["Code"]["Location"], timeout=30) as r:
        assert r.read() == zip_bytes
    resp, body, log = invoke(lam2, "demo-function", HELLO_EVENT)
    assert body == "value1" and "FunctionError" not in resp
    assert "Memory Size: 256 MB" in log
    # Credentials written on first start are reused.
    assert (data / "credentials").read_text().count("aws_access_key_id") == 1

    # Logs written before the restart are still readable.
    logs = srv2.client("logs")
    events = logs.filter_log_events(logGroupName="/aws/lambda/demo-function",
                                    filterPattern="REPORT")["events"]
    assert len(events) >= 1
    assert srv2.stop() == 0


SLEEPER = """import os, time

def lambda_handler(event, context):
    time.sleep(event.get("sleep", 0))
    return context.log_stream_name + " " + os.readlink("/proc/self/ns/pid")
"""


def env_running(env):
    """Whether any live host process belongs to the execution environment
    `env` (what SLEEPER returns: its log stream and PID namespace). A jailed
    environment is its own PID namespace; a plain-process one is found by
    the log stream in its runtime's environment."""
    stream, pidns = env.split(" ", 1)
    own = pidns == os.readlink("/proc/self/ns/pid")
    needle = f"AWS_LAMBDA_LOG_STREAM_NAME={stream}".encode()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if own:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if needle not in f.read().split(b"\0"):
                        continue
            elif os.readlink(f"/proc/{pid}/ns/pid") != pidns:
                continue
            with open(f"/proc/{pid}/stat") as st:
                if st.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return True
        except OSError:
            continue
    return False


def test_keep_alive_reaps_idle_environments(own_server):
    srv = own_server(args=["--keep-alive", "2"])
    lam = srv.client()
    lam.create_function(FunctionName="reaped", Runtime=PY_RUNTIME, Role=ROLE,
                        Handler="lambda_function.lambda_handler",
                        Code={"ZipFile": make_zip({"lambda_function.py": SLEEPER})})
    _, env1, log = invoke(lam, "reaped", {})
    assert report(log)["init"] is not None
    assert env_running(env1)
    _, env2, log = invoke(lam, "reaped", {})
    assert env2 == env1 and report(log)["init"] is None  # warm within the keep-alive

    wait_for(lambda: not env_running(env1), timeout=15,
             what="the idle environment to be stopped")
    _, env3, log = invoke(lam, "reaped", {})
    assert env3 != env1
    assert report(log)["init"] is not None, "no cold start after the environment was reaped"
    time.sleep(0.5)  # idle long enough to be frozen: shutdown must end it anyway
    assert srv.stop() == 0
    # Shutting down stops the environments too.
    wait_for(lambda: not env_running(env3), timeout=10,
             what="the environment to end with the server")


def test_account_concurrency_limit(own_server):
    srv = own_server(args=["--concurrency", "1"])
    lam = srv.client()
    lam.create_function(FunctionName="busy", Runtime=PY_RUNTIME, Role=ROLE,
                        Handler="lambda_function.lambda_handler", Timeout=10,
                        Code={"ZipFile": make_zip({"lambda_function.py": SLEEPER})})
    assert lam.get_account_settings()["AccountLimit"]["ConcurrentExecutions"] == 1
    invoke(lam, "busy", {}, tail=False)  # warm up
    done = {}
    long = threading.Thread(
        target=lambda: done.update(r=invoke(lam, "busy", {"sleep": 4}, tail=False)))
    long.start()
    throttled = None
    # While the long invocation holds the only slot, another is refused.
    while long.is_alive() and throttled is None:
        time.sleep(0.2)
        try:
            invoke(lam, "busy", {}, tail=False)
        except ClientError as e:
            throttled = e.response
    long.join(30)
    assert throttled is not None, "a second concurrent invocation was not throttled"
    assert throttled["Error"]["Code"] == "TooManyRequestsException"
    assert throttled["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert "retry-after" in throttled["ResponseMetadata"]["HTTPHeaders"]
    assert "FunctionError" not in done["r"][0]
    # Free again once the first one is done.
    _, body, _ = invoke(lam, "busy", {}, tail=False)
    assert body.startswith(time.strftime("%Y/%m/%d/[$LATEST]", time.gmtime()))
    assert " pid:[" in body
    assert srv.stop() == 0


def test_sigterm_lets_the_invocation_in_flight_finish(own_server):
    srv = own_server()
    lam = srv.client()
    lam.create_function(FunctionName="inflight", Runtime=PY_RUNTIME, Role=ROLE,
                        Handler="lambda_function.lambda_handler", Timeout=10,
                        Code={"ZipFile": make_zip({"lambda_function.py": SLEEPER})})
    env = invoke(lam, "inflight", {}, tail=False)[1]
    out = {}

    def run():
        try:
            out["result"] = invoke(lam, "inflight", {"sleep": 2}, tail=False)
        except Exception as e:  # noqa: BLE001 - asserted below
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.7)
    started = time.monotonic()
    assert srv.stop(timeout=30) == 0
    t.join(30)
    assert "error" not in out, out.get("error")
    resp, body, _ = out["result"]
    assert "FunctionError" not in resp and body == env
    assert time.monotonic() - started < 15
