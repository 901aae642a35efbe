"""End-to-end fixtures: a real `nimbus serve` process and real AWS clients.

Everything here talks to nimbus the way a user does: boto3 clients with an
`endpoint_url`, the AWS CLI in a subprocess, and plain urllib for the
presigned `Code.Location` URL. Nothing is mocked.

Environment:
  NIMBUS_BIN            the server binary (default: <repo>/target/debug/nimbus)
  NIMBUS_E2E_RUNTIME    the Python runtime id for Python functions (default python3.11)
  NIMBUS_RUST_ECHO      the rust-echo `bootstrap` binary (default: <repo>/target/debug/bootstrap,
                        built with `cargo build -p rust-echo` when missing)
"""

import atexit
import base64
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "target" / "e2e-cache"
REGION = "us-east-1"
ACCOUNT = "000000000000"
ACCESS_KEY = "AKIDNIMBUSE2E"
SECRET_KEY = "nimbus-e2e-secret"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/lambda-e2e-role"
PY_RUNTIME = os.environ.get("NIMBUS_E2E_RUNTIME", "python3.11")
LAMBDA_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
BASIC_EXECUTION = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"

# The console's "Hello world" blueprint (lambda_function.py), verbatim.
HELLO_WORLD = '''import json

print('Loading function')


def lambda_handler(event, context):
    #print("Received event: " + json.dumps(event, indent=2))
    print("value1 = " + event['key1'])
    print("value2 = " + event['key2'])
    print("value3 = " + event['key3'])
    return event['key1']  # Echo back the first key value
    #raise Exception('Something went wrong')
'''
HELLO_EVENT = {"key1": "value1", "key2": "value2", "key3": "value3"}

REPORT_RE = re.compile(
    r"^REPORT RequestId: (?P<id>\S+)\tDuration: (?P<duration>[\d.]+) ms\t"
    r"Billed Duration: (?P<billed>\d+) ms\tMemory Size: (?P<memory>\d+) MB\t"
    r"Max Memory Used: (?P<max_memory>\d+) MB(?:\tInit Duration: (?P<init>[\d.]+) ms)?",
    re.M,
)


# ---------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------

def server_binary():
    p = Path(os.environ.get("NIMBUS_BIN", "target/debug/nimbus"))
    if not p.is_absolute():
        p = REPO / p
    return p


_running = []  # every Server started, killed at exit if a test left one up


@atexit.register
def _kill_leftovers():
    for srv in list(_running):
        srv.kill()


class Server:
    """One `nimbus serve` process on a free port, stoppable and restartable
    on the same data directory."""

    def __init__(self, data_dir, extra_args=()):
        self.binary = server_binary()
        self.data_dir = Path(data_dir)
        self.extra_args = list(extra_args)
        self.proc = None
        self.url = None
        self.log_path = self.data_dir.parent / (self.data_dir.name + "-server.log")
        self._stdout_lines = []

    def start(self, timeout=60):
        if not self.binary.exists():
            pytest.fail(
                f"nimbus binary not found at {self.binary}: build it with "
                "`cargo build -p nimbus-cli` or set NIMBUS_BIN", pytrace=False)
        env = dict(os.environ)
        env.update(NIMBUS_ACCESS_KEY_ID=ACCESS_KEY, NIMBUS_SECRET_ACCESS_KEY=SECRET_KEY,
                   RUST_LOG=env.get("RUST_LOG", "info"), NO_COLOR="1")
        for k in ("NIMBUS_LISTEN", "NIMBUS_DATA_DIR", "NIMBUS_ENDPOINT_URL"):
            env.pop(k, None)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", "--listen", "127.0.0.1:0",
             "--data-dir", str(self.data_dir), *self.extra_args],
            stdout=subprocess.PIPE, stderr=log, env=env, start_new_session=True)
        log.close()
        _running.append(self)
        ready = threading.Event()

        def pump(stream):
            for raw in stream:
                line = raw.decode(errors="replace").rstrip("\n")
                self._stdout_lines.append(line)
                m = re.search(r"nimbus ready on (http://\S+)", line)
                if m and not ready.is_set():
                    self.url = m.group(1)
                    ready.set()

        threading.Thread(target=pump, args=(self.proc.stdout,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"nimbus did not become ready:\n{self.log_tail()}", pytrace=False)
        with urllib.request.urlopen(self.url + "/_nimbus/health", timeout=10) as r:
            assert r.status == 200
        self.ensure_execution_role()
        return self

    def ensure_execution_role(self):
        """Creates ROLE (trusting Lambda, with AWSLambdaBasicExecutionRole)
        if missing, as a user does once before creating functions."""
        iam = self.client("iam")
        name = ROLE.rsplit("/", 1)[1]
        try:
            iam.get_role(RoleName=name)
        except ClientError:
            iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST))
            iam.attach_role_policy(RoleName=name, PolicyArn=BASIC_EXECUTION)

    def stop(self, timeout=20):
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if self in _running:
            _running.remove(self)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                raise AssertionError(f"nimbus did not exit within {timeout}s of SIGTERM")
        return proc.returncode

    def kill(self):
        """Stops the server, gracefully if it will (SIGTERM: it ends its
        execution environments, frozen ones included), else SIGKILL."""
        if self in _running:
            _running.remove(self)
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        self.proc = None

    def healthy(self):
        try:
            with urllib.request.urlopen(self.url + "/_nimbus/health", timeout=10) as r:
                return r.status == 200
        except OSError:
            return False

    def log_tail(self, n=60):
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        return "\n".join(self._stdout_lines[-10:] + lines[-n:])

    # Clients -------------------------------------------------------------

    def client(self, service="lambda", **config):
        cfg = {"retries": {"total_max_attempts": 1}, "read_timeout": 120,
               "connect_timeout": 10, "max_pool_connections": 20}
        cfg.update(config)
        return boto3.client(service, endpoint_url=self.url, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                            config=Config(**cfg))


_servers = []


@pytest.fixture
def own_server(tmp_path):
    """Starts servers of the test's own (data dir, extra `serve` flags),
    for tests that restart or reconfigure one; all are killed afterwards."""
    started = []

    def start(data_dir=None, args=()):
        srv = Server(data_dir or tmp_path / "data", args).start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("nimbus") / "data").start()
    _servers.append(srv)
    yield srv
    code = srv.stop()
    _servers.remove(srv)
    assert code == 0, f"nimbus exited with {code} on SIGTERM:\n{srv.log_tail()}"


@pytest.fixture(scope="session")
def lam(server):
    return server.client("lambda")


@pytest.fixture(scope="session")
def logs(server):
    return server.client("logs")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the server log tail to failing tests."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and _servers:
        rep.sections.append(("nimbus server log (tail)", _servers[0].log_tail()))


# ---------------------------------------------------------------------------
# AWS CLI
# ---------------------------------------------------------------------------

class Cli:
    def __init__(self, server, cwd):
        self.server = server
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        self.env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                        AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE="/dev/null",
                        AWS_SHARED_CREDENTIALS_FILE="/dev/null", AWS_PAGER="",
                        AWS_MAX_ATTEMPTS="1")

    @property
    def v2(self):
        """CLI v2 (base64 blobs unless told otherwise) or v1 (raw blobs)."""
        return _cli_version().startswith("aws-cli/2")

    def payload_args(self, text):
        """`--payload` as each CLI major version takes raw JSON; v1 has no
        --cli-binary-format (it always sends the text as is)."""
        extra = ["--cli-binary-format", "raw-in-base64-out"] if self.v2 else []
        return [*extra, "--payload", text]

    def run(self, *args, check=True, timeout=120):
        cmd = ["aws", "--endpoint-url", self.server.url, "--output", "json", *args]
        p = subprocess.run(cmd, cwd=self.cwd, env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr}")
        return p

    def json(self, *args, **kw):
        p = self.run(*args, **kw)
        return json.loads(p.stdout) if p.stdout.strip() else {}


_cli_version_cache = []


def _cli_version():
    if not _cli_version_cache:
        p = subprocess.run(["aws", "--version"], capture_output=True, text=True)
        _cli_version_cache.append((p.stdout + p.stderr).strip())
    return _cli_version_cache[0]


@pytest.fixture(scope="session")
def aws_cli_available():
    if shutil.which("aws") is None:
        pytest.fail("the AWS CLI (`aws`) is not installed: run scripts/setup-test-deps.sh",
                    pytrace=False)


@pytest.fixture
def cli(server, tmp_path, aws_cli_available):
    return Cli(server, tmp_path)


def run_nimbus(srv, *args, check=True):
    """The `nimbus` client (dlq, trigger, usage, ...) against `srv`, with the
    test keys; the finished process."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and not k.startswith("NIMBUS_")}
    env.update(NIMBUS_URL=srv.url, AWS_ACCESS_KEY_ID=ACCESS_KEY,
               AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    p = subprocess.run([str(server_binary()), *args], env=env, capture_output=True,
                       text=True, timeout=60)
    if check:
        assert p.returncode == 0, f"nimbus {' '.join(args)} failed:\n{p.stderr}"
    return p


# ---------------------------------------------------------------------------
# Zips and functions
# ---------------------------------------------------------------------------

def make_zip(files, executable=(), level=zipfile.ZIP_DEFLATED):
    """A zip in memory. `files` maps archive names to str/bytes contents;
    names in `executable` get mode 0755 (else 0644)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", level) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
            info.compress_type = level
            info.create_system = 3
            mode = 0o755 if name in executable else 0o644
            info.external_attr = (0o100000 | mode) << 16
            z.writestr(info, data.encode() if isinstance(data, str) else data)
    return buf.getvalue()


def py_zip(source, module="lambda_function", extra=None):
    files = {f"{module}.py": source}
    files.update(extra or {})
    return make_zip(files)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def tail_log(resp):
    """The decoded `LogResult` of an invoke response."""
    return base64.b64decode(resp["LogResult"]).decode()


def report(log_text):
    """The REPORT line of a log tail, parsed."""
    m = REPORT_RE.search(log_text)
    assert m, f"no REPORT line in:\n{log_text}"
    return m.groupdict()


def payload(resp):
    return json.loads(resp["Payload"].read())


def error_code(excinfo):
    return excinfo.value.response["Error"]["Code"]


class Functions:
    """Creates functions with unique names and deletes them afterwards."""

    def __init__(self, lam):
        self.lam = lam
        self.created = []

    def create(self, zip_bytes, name=None, runtime=None, handler="lambda_function.lambda_handler",
               prefix="fn", wait=True, **kw):
        name = name or unique(prefix)
        kw.setdefault("Role", ROLE)
        resp = self.lam.create_function(
            FunctionName=name, Runtime=runtime or PY_RUNTIME, Handler=handler,
            Code={"ZipFile": zip_bytes}, **kw)
        self.created.append(name)
        if wait:
            self.lam.get_waiter("function_active_v2").wait(
                FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        return resp

    def python(self, source, **kw):
        return self.create(py_zip(source), **kw)

    def cleanup(self):
        for name in self.created:
            try:
                self.lam.delete_function(FunctionName=name)
            except ClientError as e:
                if e.response["Error"]["Code"] != "ResourceNotFoundException":
                    raise


@pytest.fixture
def functions(lam):
    f = Functions(lam)
    yield f
    f.cleanup()


def invoke(lam, name, event=None, tail=True, **kw):
    """Invoke synchronously; returns (response, parsed payload, log tail)."""
    args = {"FunctionName": name, "Payload": json.dumps(event if event is not None else {})}
    if tail:
        args["LogType"] = "Tail"
    args.update(kw)
    resp = lam.invoke(**args)
    body = resp["Payload"].read()
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = body
    return resp, parsed, tail_log(resp) if tail else None


def wait_for(check, timeout=20, interval=0.2, what="condition"):
    """Polls `check` until it returns a truthy value (the log writer is
    asynchronous)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


# ---------------------------------------------------------------------------
# Artifacts built once: awslambdaric, the rust-echo binary
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def function_path(server, lam):
    """The PATH a function's processes see (its `python3` is what a
    provided.al2023 bootstrap runs), read from inside a function."""
    name = unique("path-probe")
    lam.create_function(FunctionName=name, Runtime=PY_RUNTIME, Role=ROLE,
                        Handler="lambda_function.lambda_handler",
                        Code={"ZipFile": py_zip(
                            "import os\ndef lambda_handler(e, c):\n    return os.environ['PATH']\n")})
    try:
        resp, path, _ = invoke(lam, name, tail=False)
        assert "FunctionError" not in resp, path
        return path
    finally:
        lam.delete_function(FunctionName=name)


@pytest.fixture(scope="session")
def awslambdaric_dir(function_path):
    """`pip install --target` of the official awslambdaric, for the python3
    a provided.al2023 function runs (it has a C extension, so the
    interpreter version matters); cached under target/e2e-cache/."""
    python = shutil.which("python3", path=function_path)
    assert python, f"no python3 on a function's PATH: {function_path}"
    tag = subprocess.run(
        [python, "-c", "import sys; print('cp%d%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True).stdout.strip()
    target = CACHE / f"awslambdaric-{tag}"
    marker = target / ".complete"
    if not marker.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="awslambdaric-", dir=CACHE))
        common = ["install", "--quiet", "--disable-pip-version-check", "--no-compile",
                  "--target", str(tmp)]
        has_pip = subprocess.run([python, "-m", "pip", "--version"],
                                 capture_output=True).returncode == 0
        if has_pip:
            cmd = [python, "-m", "pip", *common, "awslambdaric"]
        else:
            # That interpreter has no pip: fetch its wheels with ours.
            cmd = [sys.executable, "-m", "pip", *common, "--only-binary=:all:",
                   "--python-version", tag[2] + "." + tag[3:], "awslambdaric"]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            pytest.fail(f"pip install awslambdaric failed:\n{p.stderr}", pytrace=False)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        marker.write_text(python + "\n")
    return target


@pytest.fixture(scope="session")
def rust_echo_binary():
    p = Path(os.environ.get("NIMBUS_RUST_ECHO", REPO / "target" / "debug" / "bootstrap"))
    if not p.exists():
        r = subprocess.run(["cargo", "build", "-p", "rust-echo"], cwd=REPO,
                           capture_output=True, text=True, timeout=1800)
        if r.returncode != 0 or not p.exists():
            pytest.fail(f"cargo build -p rust-echo failed:\n{r.stderr[-4000:]}", pytrace=False)
    return p
