"""Metering: every invocation rolled up per function and hour, read through
the signed `GET /_nimbus/usage` (as botocore signs any request, service
`nimbus`) and `nimbus usage`; the Prometheus `/metrics` endpoint; throttles
counted on a server of its own started with `--concurrency 1`.

Usage is written asynchronously (a batching writer thread), so reads poll
briefly. The expected GB-seconds come from the REPORT lines the functions'
logs carry: billed ms × memory MB / 1024 / 1000."""

import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import (ACCESS_KEY, PY_RUNTIME, REGION, REPORT_RE, ROLE, SECRET_KEY,
                      error_code, invoke, py_zip, server_binary, unique, wait_for)

PRICE_PER_REQUEST = 0.20 / 1e6
PRICE_PER_GB_SECOND = 0.0000166667

HANDLER = """import time

def lambda_handler(event, context):
    time.sleep(event.get("sleep", 0))
    if event.get("fail"):
        raise ValueError("asked to fail")
    return event.get("n")
"""


def get_usage(server, key=ACCESS_KEY, secret=SECRET_KEY, service="nimbus", sign=True, **params):
    """`GET /_nimbus/usage`; returns (status, error type, parsed body)."""
    url = server.url + "/_nimbus/usage"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    req = AWSRequest(method="GET", url=url)
    if sign:
        SigV4Auth(Credentials(key, secret), service, REGION).add_auth(req)
    prepared = req.prepare()
    r = urllib.request.Request(prepared.url, method="GET", headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, None, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("x-amzn-ErrorType"), json.loads(e.read() or b"{}")


def usage_of(server, name, since=None):
    """The usage row of one function (None until it has one)."""
    status, err, body = get_usage(server, since=since or int(time.time()) - 3600, function=name)
    assert status == 200, (status, err, body)
    rows = body["functions"]
    assert len(rows) <= 1 and all(r["functionName"] == name for r in rows), rows
    return rows[0] if rows else None


def wait_usage(server, name, **expected):
    """Polls until the function's row has (at least) the expected counts."""
    def check():
        row = usage_of(server, name)
        if row and all(row[k] >= v for k, v in expected.items()):
            return row
        return None
    return wait_for(check, what=f"usage of {name} reaching {expected}")


def reports(logs, name, count):
    """The parsed REPORT lines of a function, once there are `count`."""
    group = f"/aws/lambda/{name}"

    def check():
        try:
            events = logs.filter_log_events(logGroupName=group, filterPattern="REPORT")["events"]
        except logs.exceptions.ResourceNotFoundException:
            return None
        found = [m.groupdict() for e in events if (m := REPORT_RE.search(e["message"]))]
        return found if len(found) >= count else None
    found = wait_for(check, what=f"{count} REPORT lines in {group}")
    assert len(found) == count, found
    return found


def gb_seconds(found):
    return sum(int(r["billed"]) * int(r["memory"]) for r in found) / 1024 / 1000


def scrape(server):
    """`/metrics`, unauthenticated: (content type, {sample: value}, text)."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as r:
        assert r.status == 200
        text = r.read().decode()
        ctype = r.headers["Content-Type"]
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?) (\S+)', line)
        assert m, f"not a 0.0.4 sample line: {line!r}"
        samples[m.group(1)] = float(m.group(2))
    return ctype, samples, text


@pytest.fixture(scope="module")
def metered(lam, logs):
    """A 256 MB function invoked 5 times synchronously (one function error)
    and once as an Event; returns its name and its six REPORT lines."""
    name = unique("metered")
    lam.create_function(FunctionName=name, Runtime=PY_RUNTIME, Role=ROLE,
                        Handler="lambda_function.lambda_handler", MemorySize=256,
                        Code={"ZipFile": py_zip(HANDLER)})
    for n in range(4):
        resp, body, _ = invoke(lam, name, {"n": n}, tail=False)
        assert body == n and "FunctionError" not in resp
    resp, _, _ = invoke(lam, name, {"fail": True}, tail=False)
    assert resp["FunctionError"] == "Unhandled"
    assert lam.invoke(FunctionName=name, InvocationType="Event",
                      Payload=json.dumps({"n": 9}))["StatusCode"] == 202
    found = reports(logs, name, 6)
    yield name, found
    lam.delete_function(FunctionName=name)


def test_usage_counts_requests_errors_and_gb_seconds(server, metered):
    name, found = metered
    row = wait_usage(server, name, requests=6)
    assert row["requests"] == 6, "5 synchronous invocations and 1 Event"
    assert row["errors"] == 1
    assert row["throttles"] == 0
    assert row["billedDurationMs"] == sum(int(r["billed"]) for r in found)
    assert row["gbSeconds"] == pytest.approx(gb_seconds(found), abs=1e-12)
    assert all(r["memory"] == "256" for r in found)
    assert row["initDurationMs"] > 0, "the first invocation was a cold start"
    assert row["durationMs"] > 0
    cost = 6 * PRICE_PER_REQUEST + gb_seconds(found) * PRICE_PER_GB_SECOND
    assert row["cost"] == pytest.approx(cost, rel=1e-9)
    # A test server is far from 1M requests and 400,000 GB-s this month.
    assert row["freeTierRequests"] == 6
    assert row["freeTierGbSeconds"] == pytest.approx(row["gbSeconds"])
    assert row["costAfterFreeTier"] == pytest.approx(0, abs=1e-15)

    status, _, body = get_usage(server, since=int(time.time()) - 3600)
    assert status == 200
    assert body["prices"] == {"perMillionRequests": 0.2, "perGbSecond": PRICE_PER_GB_SECOND}
    assert body["freeTier"] == {"requestsPerMonth": 1_000_000, "gbSecondsPerMonth": 400_000}
    names = [f["functionName"] for f in body["functions"]]
    assert name in names and names == sorted(names)
    total = body["total"]
    assert total["requests"] == sum(f["requests"] for f in body["functions"])
    assert total["gbSeconds"] == pytest.approx(sum(f["gbSeconds"] for f in body["functions"]))
    assert body["since"] % 3600 == 0, "since rounds down to its hour"

    # A window after now has nothing; `function` takes an ARN too.
    status, _, later = get_usage(server, since=int(time.time()) + 7200)
    assert status == 200 and later["functions"] == [] and later["total"]["requests"] == 0
    arn = f"arn:aws:lambda:{REGION}:000000000000:function:{name}"
    status, _, by_arn = get_usage(server, since=int(time.time()) - 3600, function=arn)
    assert [f["functionName"] for f in by_arn["functions"]] == [name]


def test_usage_is_signed_for_service_nimbus(server):
    status, err, _ = get_usage(server, sign=False)
    assert (status, err) == (403, "MissingAuthenticationTokenException")
    status, err, body = get_usage(server, service="lambda")
    assert (status, err) == (403, "InvalidSignatureException")
    assert "scoped to correct service: 'nimbus'" in body["message"]
    status, err, _ = get_usage(server, secret="wrong")
    assert (status, err) == (403, "InvalidSignatureException")
    status, err, _ = get_usage(server, key="AKIDUNKNOWN")
    assert (status, err) == (403, "UnrecognizedClientException")
    status, err, _ = get_usage(server, since="yesterday")
    assert (status, err) == (400, "InvalidParameterValueException")
    # Health and the Prometheus scrape stay open.
    assert server.healthy()
    assert scrape(server)[1] is not None


def nimbus_cli(*args, env):
    p = subprocess.run([str(server_binary()), *args], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, f"nimbus {' '.join(args)} failed ({p.returncode}):\n{p.stderr}"
    return p.stdout


def cli_env(server, with_keys):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and not k.startswith("NIMBUS_")}
    env["NIMBUS_URL"] = server.url
    if with_keys:
        env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    else:
        env["NIMBUS_DATA_DIR"] = str(server.data_dir)  # its `credentials` file
    return env


def test_nimbus_usage_prints_per_function_and_total(server, metered):
    name, found = metered
    wait_usage(server, name, requests=6)
    for with_keys in (True, False):
        out = nimbus_cli("usage", "--since", "2", "--function", name,
                         env=cli_env(server, with_keys))
        lines = out.splitlines()
        header = next(line for line in lines if line.startswith("FUNCTION"))
        assert header.split() == ["FUNCTION", "REQUESTS", "ERRORS", "THROTTLES", "GB-SECONDS",
                                  "COST"]
        row = next(line for line in lines if line.startswith(name)).split()
        assert row[1:4] == ["6", "1", "0"], out
        assert float(row[4]) == pytest.approx(gb_seconds(found), abs=1e-6)
        assert row[5].startswith("$")
        total = next(line for line in lines if line.startswith("TOTAL")).split()
        assert total[1:4] == ["6", "1", "0"], out
        assert "Prices: $0.2 per 1M requests, $0.0000166667 per GB-second" in out
        assert "Free tier (each month: 1,000,000 requests and 400,000 GB-seconds)" in out
        assert re.search(r"covers 6 requests and [\d.]+ GB-seconds of this usage: -\$", out), out
        assert re.search(r"^Cost before free tier: \$\d+\.\d{6}$", out, re.M), out
        assert re.search(r"^Cost after free tier:  \$0\.000000$", out, re.M), out

    as_json = json.loads(nimbus_cli("usage", "--json", "--function", name,
                                    env=cli_env(server, True)))
    assert [f["functionName"] for f in as_json["functions"]] == [name]
    assert as_json["total"]["requests"] == 6

    # Without credentials the CLI says what is missing.
    env = cli_env(server, False)
    env["NIMBUS_DATA_DIR"] = "/nonexistent"
    p = subprocess.run([str(server_binary()), "usage"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode != 0 and "no credentials" in p.stderr


def test_metrics_after_invocations(server, metered):
    name, found = metered
    label = f'{{function_name="{name}"}}'

    def settled():
        # The Event invocation may still be finishing.
        _, s, _ = scrape(server)
        return s if s.get(f"nimbus_lambda_invocations_total{label}") == 6 else None
    wait_for(settled, what="6 invocations in /metrics")
    ctype, s, text = scrape(server)
    assert ctype == "text/plain; version=0.0.4; charset=utf-8"
    for family, kind in [("nimbus_lambda_invocations_total", "counter"),
                         ("nimbus_lambda_errors_total", "counter"),
                         ("nimbus_lambda_throttles_total", "counter"),
                         ("nimbus_lambda_gb_seconds_total", "counter"),
                         ("nimbus_lambda_concurrent_executions", "gauge"),
                         ("nimbus_lambda_duration_seconds", "histogram")]:
        assert f"# TYPE {family} {kind}\n" in text
        assert f"# HELP {family} " in text
    assert s[f"nimbus_lambda_errors_total{label}"] == 1
    assert s[f"nimbus_lambda_throttles_total{label}"] == 0
    assert s[f"nimbus_lambda_concurrent_executions{label}"] == 0
    assert s[f"nimbus_lambda_gb_seconds_total{label}"] == pytest.approx(gb_seconds(found))
    h = "nimbus_lambda_duration_seconds"
    assert s[f"{h}_count{label}"] == 6
    assert s[f'{h}_bucket{{function_name="{name}",le="+Inf"}}'] == 6
    buckets = [(float(m.group(1)), v) for k, v in s.items()
               if (m := re.fullmatch(rf'{h}_bucket\{{function_name="{re.escape(name)}",le="([\d.]+)"\}}', k))]
    assert [b[0] for b in buckets] == sorted(b[0] for b in buckets)
    assert buckets[0][0] == 0.001 and buckets[-1][0] == 900
    counts = [b[1] for b in buckets]
    assert counts == sorted(counts), "buckets are cumulative"
    assert counts[-1] == 6
    # REPORT rounds each duration to 0.01 ms.
    durations = [float(r["duration"]) / 1000 for r in found]
    eps = 0.005 / 1000
    for le, n in buckets:
        low, high = sum(d <= le - eps for d in durations), sum(d <= le + eps for d in durations)
        assert low <= n <= high, (le, n, durations)
    assert s[f"{h}_sum{label}"] == pytest.approx(sum(durations), abs=6 * eps + 1e-6)


def test_throttles_are_counted_and_usage_survives_restart(own_server, tmp_path):
    data = tmp_path / "data"
    srv = own_server(data, ["--concurrency", "1"])
    lam = srv.client()
    lam.create_function(FunctionName="busy", Runtime=PY_RUNTIME, Role=ROLE,
                        Handler="lambda_function.lambda_handler", Timeout=10,
                        Code={"ZipFile": py_zip(HANDLER)})
    label = '{function_name="busy"}'
    results = []
    slow = threading.Thread(target=lambda: results.append(invoke(lam, "busy", {"sleep": 3})))
    slow.start()
    # The gauge shows the running invocation; the next one is refused.
    wait_for(lambda: scrape(srv)[1].get(f"nimbus_lambda_concurrent_executions{label}") == 1,
             what="the slow invocation running")
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName="busy", Payload=b"{}")
    assert error_code(e) == "TooManyRequestsException"
    slow.join(60)
    assert results and "FunctionError" not in results[0][0]

    row = wait_usage(srv, "busy", requests=1, throttles=1)
    assert (row["requests"], row["throttles"], row["errors"]) == (1, 1, 0)
    _, s, _ = scrape(srv)
    assert s[f"nimbus_lambda_throttles_total{label}"] == 1
    assert s[f"nimbus_lambda_invocations_total{label}"] == 1
    assert s[f"nimbus_lambda_concurrent_executions{label}"] == 0

    # Invoked just before SIGTERM: recorded all the same.
    invoke(lam, "busy", {"n": 1}, tail=False)
    assert srv.stop() == 0
    srv2 = own_server(data, ["--concurrency", "1"])
    row = usage_of(srv2, "busy")
    assert (row["requests"], row["throttles"]) == (2, 1)
    # Prometheus counters start again at zero with the process.
    assert 'function_name="busy"' not in scrape(srv2)[2]
