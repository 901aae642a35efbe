"""Containment: what a hostile or buggy function can do to the host, the
server and other functions when nimbus runs as root and jails every
execution environment (`--isolation auto`, the default).

One test per case of the sandboxing issue: a memory hog, a fork bomb, a
disk filler, a CPU spinner (and idle background threads), a function
reading /proc, one going after the data directory, one sending signals and
calling the syscalls the seccomp filter refuses, one probing the network;
and the plain-process mode, which still works and is visibly not a jail.
One more checks the other side of containment: an environment is not
killed while its function still needs it.
A handler that hangs past its Timeout is `test_runtime_python.py`'s
`test_timeout`.

Each test asserts what a user would check (the invoke's error, the REPORT
line, what the code saw) AND that afterwards the same function and another
function (`bystander`) still answer.

All of it needs root (namespaces, mounts, cgroups): it runs when
NIMBUS_PRIVILEGED_TESTS=1, which scripts/test.sh sets when root (CI is).
"""

import base64
import hashlib
import json
import os
import platform
import socket
import subprocess
import threading
import time

import pytest

from conftest import (ACCESS_KEY, PY_RUNTIME, ROLE, SECRET_KEY, invoke, make_zip, py_zip,
                      report, unique, wait_for)

pytestmark = pytest.mark.skipif(
    os.environ.get("NIMBUS_PRIVILEGED_TESTS") != "1",
    reason="jail tests need root: set NIMBUS_PRIVILEGED_TESTS=1 (scripts/test.sh does when root)")

SANDBOX_UID = 993  # Lambda's sbx_user1051
PIDS_MAX = 1024  # the environment cgroup's pids.max

# One handler for every test; `event["op"]` picks what it does.
HANDLER = r'''
import ctypes, errno, hashlib, json, os, platform, signal, socket, threading, time

libc = ctypes.CDLL(None, use_errno=True)
STATE = {}


def err(e):
    """An exception as the test compares it: class and errno name."""
    name = errno.errorcode.get(getattr(e, "errno", None) or 0, "")
    return f"{type(e).__name__}:{name}" if name else type(e).__name__


def attempt(fn):
    try:
        fn()
        return "ok"
    except Exception as e:
        return err(e)


def c_errno(rc):
    """A libc call's outcome: "ok" or the errno name it failed with."""
    if rc == 0:
        return "ok"
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))


def visible_pids():
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())


def lambda_handler(event, context):
    op = event.get("op", "ping")
    if op == "ping":
        return "pong"
    return globals()["op_" + op](event, context)


def op_hog(event, context):
    chunks = []
    while len(chunks) < 64:  # 64 x 16 MB = 1 GB
        chunks.append(b"\xff" * (16 << 20))  # written, so resident
        print(f"allocated {len(chunks) * 16} MB", flush=True)
    return "allocated 1 GB"


def op_forkbomb(event, context):
    children, failure = [], None
    while len(children) < 4 * 1024:
        try:
            pid = os.fork()
        except OSError as e:
            failure = e
            break
        if pid == 0:
            try:
                signal.pause()
            finally:
                os._exit(0)
        children.append(pid)
    return {"forked": len(children), "error": failure and err(failure),
            "visible": len(visible_pids())}


def op_sleep(event, context):
    time.sleep(event["seconds"])
    return {"slept": event["seconds"], "env": context.log_stream_name}


def op_count(event, context):
    return {"visible": len(visible_pids()), "env": context.log_stream_name,
            "pidns": os.readlink("/proc/self/ns/pid")}


def op_fill(event, context):
    path, written, failure = event.get("path", "/tmp/fill"), 0, None
    chunk = b"\xab" * (1 << 20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            written += os.write(fd, chunk)
    except OSError as e:
        failure = err(e)
    finally:
        os.close(fd)
    return {"written": written, "error": failure, "env": context.log_stream_name}


def op_openfiles(event, context):
    import resource
    held = []
    try:
        while len(held) < 100000:
            held.append(open("/dev/null"))
        error = None
    except OSError as e:
        error = errno.errorcode.get(e.errno, str(e.errno))
    n = len(held)
    for f in held:
        f.close()
    return {"opened": n, "error": error, "limit": resource.getrlimit(resource.RLIMIT_NOFILE)}


def op_tmp(event, context):
    path = event.get("path", "/tmp/fill")
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        size = None
    if event.get("remove") and size is not None:
        os.remove(path)
    written = None
    if event.get("write_mb"):  # /tmp is usable again
        with open(path, "wb") as f:
            written = f.write(b"\xcd" * (event["write_mb"] << 20))
    return {"size": size, "written": written, "env": context.log_stream_name}


def op_spin(event, context):
    """Threads hashing (which releases the GIL, so N threads can use N CPUs)
    for `seconds` of wall time; returns the CPU time the process got."""
    stop = time.monotonic() + event.get("seconds", 1.0)
    data = b"x" * (256 << 10)

    def burn():
        while time.monotonic() < stop:
            hashlib.sha256(data).digest()

    w0, c0 = time.monotonic(), time.process_time()
    threads = [threading.Thread(target=burn) for _ in range(event.get("threads", 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"cpu": time.process_time() - c0, "wall": time.monotonic() - w0}


def op_background(event, context):
    """Leaves a daemon thread spinning after the handler returns."""
    if "spinner" not in STATE:
        def spin():
            n = 0
            while True:
                n += 1
        STATE["spinner"] = threading.Thread(target=spin, daemon=True)
        STATE["spinner"].start()
    return {"cpu": time.process_time(), "env": context.log_stream_name}


def op_cpu(event, context):
    first = time.process_time()
    time.sleep(event.get("sleep", 0))
    return {"cpu": first, "cpu_after_sleep": time.process_time(),
            "spinner_alive": STATE["spinner"].is_alive() if "spinner" in STATE else None,
            "env": context.log_stream_name}


def op_proc(event, context):
    server = event["server_pid"]
    status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines()
                  if ":\t" in l)
    return {
        "pids": visible_pids(),
        "self": os.getpid(),
        "ppid": os.getppid(),
        "init_cmdline": open("/proc/1/cmdline", "rb").read().decode(errors="replace")
                        .split("\0")[:-1],
        "init_environ": attempt(lambda: open("/proc/1/environ", "rb").read()),
        "server_status": attempt(lambda: open(f"/proc/{server}/status").read()),
        "server_cmdline": attempt(lambda: open(f"/proc/{server}/cmdline").read()),
        "server_listed": os.path.exists(f"/proc/{server}"),
        "status": {k: status[k].strip() for k in ("Uid", "Gid", "CapEff", "CapPrm", "CapBnd")},
    }


def op_fds(event, context):
    """Every open descriptor: what it is, and for sockets their family."""
    out = {}
    for fd in sorted(int(f) for f in os.listdir("/proc/self/fd")):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the directory listing itself, closed meanwhile
        if target.startswith("socket:"):
            s = socket.socket(fileno=fd)
            target = f"socket:{s.family.name}"
            s.detach()
        out[fd] = target
    return out


def op_walk(event, context):
    """Every file on the sandbox's own filesystems: the root, /tmp and
    /var/task (not inside the other mounts: /usr, /etc, the interpreters,
    /var/runtime, /dev, /proc)."""
    skip = {m.split()[1] for m in open("/proc/self/mounts").read().splitlines()}
    skip -= {"/", "/tmp", "/var/task"}
    files, unreadable = [], []
    for top, dirs, names in os.walk("/", onerror=lambda e: unreadable.append(e.filename)):
        dirs[:] = [d for d in dirs if os.path.join(top, d) not in skip]
        files += [os.path.join(top, n) for n in names]
    return {"files": files, "unreadable": unreadable}


def op_files(event, context):
    status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines()
                  if ":\t" in l)
    def read(path):
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, "rb").read(1)

    def write(path):
        with open(path, "a") as f:
            f.write("x")
    return {
        "reads": {p: attempt(lambda p=p: read(p)) for p in event["paths"]},
        "writes": {p: attempt(lambda p=p: write(p)) for p in event.get("writes", [])},
        "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()],
        "status": {k: status[k].strip() for k in ("CapEff", "CapPrm", "CapInh", "CapAmb",
                                                  "NoNewPrivs", "Seccomp")},
        "env": dict(os.environ),
        "task": sorted(os.listdir(os.environ["LAMBDA_TASK_ROOT"])),
        "mounts": {m.split()[1]: m.split()[3].split(",")[0]
                   for m in open("/proc/self/mounts").read().splitlines()},
    }


SYS_CLONE = {"x86_64": 56, "aarch64": 220}
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x20000, 0x10000000, 0x40000000
PTRACE_ATTACH, PTRACE_TRACEME = 16, 0


def op_signals(event, context):
    out = {"self": os.getpid()}
    child = os.fork()
    if child == 0:
        try:
            signal.pause()
        finally:
            os._exit(0)
    # Tracing even its own child is refused by the seccomp filter (the
    # kernel alone would allow it: same uid, a descendant).
    out["ptrace_child"] = c_errno(libc.ptrace(PTRACE_ATTACH, child, None, None))
    out["ptrace_init"] = c_errno(libc.ptrace(PTRACE_ATTACH, 1, None, None))
    out["ptrace_traceme"] = c_errno(libc.ptrace(PTRACE_TRACEME, 0, None, None))
    os.makedirs("/tmp/mnt", exist_ok=True)
    out["mount"] = c_errno(libc.mount(b"none", b"/tmp/mnt", b"tmpfs", 0, None))
    # Unprivileged user namespaces would be allowed without the filter.
    out["unshare_user"] = c_errno(libc.unshare(CLONE_NEWUSER))
    out["unshare_net"] = c_errno(libc.unshare(CLONE_NEWNET))
    fd = os.open("/proc/self/ns/uts", os.O_RDONLY)
    out["setns"] = c_errno(libc.setns(fd, 0))
    os.close(fd)
    nr = SYS_CLONE.get(platform.machine())
    if nr is not None:
        rc = libc.syscall(nr, CLONE_NEWUSER | signal.SIGCHLD, 0, 0, 0, 0)
        if rc == 0:
            os._exit(0)  # the filter let it through: we are the new child
        if rc > 0:
            os.waitpid(rc, 0)
        out["clone_newuser"] = "ok" if rc > 0 else c_errno(rc)
    # Signals: everything visible, then the server's host pid.
    out["kill"] = {}
    for pid in visible_pids():
        if pid != os.getpid():
            out["kill"][pid] = attempt(lambda pid=pid: os.kill(pid, signal.SIGKILL))
    out["child"] = child
    out["child_status"] = os.waitpid(child, 0)[1]
    out["kill_server"] = attempt(lambda: os.kill(event["server_pid"], signal.SIGKILL))
    # kill(-1): every process it may signal. Other sandboxes' runtimes have
    # the same uid; only the PID namespace keeps them out of reach.
    child2 = os.fork()
    if child2 == 0:
        try:
            signal.pause()
        finally:
            os._exit(0)
    out["kill_all"] = attempt(lambda: os.kill(-1, signal.SIGKILL))
    out["child2_status"] = os.waitpid(child2, 0)[1]
    out["alive_after"] = visible_pids()
    return out


def op_net(event, context):
    def connect(host, port):
        def go():
            socket.create_connection((host, port), timeout=1.5).close()
        return attempt(go)
    out = {"targets": {f"{h}:{p}": connect(h, p) for h, p in event["targets"]}}

    def connect_unix():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(b"\0" + event["abstract"].encode())
        finally:
            s.close()
    out["abstract"] = attempt(connect_unix)
    host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
    out["runtime_api"] = os.environ["AWS_LAMBDA_RUNTIME_API"]
    out["runtime_api_connect"] = connect(host, int(port))
    out["endpoint"] = os.environ["AWS_ENDPOINT_URL"]
    import boto3
    out["functions"] = [f["FunctionName"] for f in
                        boto3.client("lambda").list_functions()["Functions"]]
    out["caller"] = boto3.client("sts").get_caller_identity()["Arn"]
    return out
'''


def handler_zip(**extra):
    return py_zip(HANDLER, extra=extra)


@pytest.fixture(scope="module")
def bystander(lam):
    """A function no test attacks: it must keep answering."""
    name = unique("bystander")
    lam.create_function(FunctionName=name, Runtime=PY_RUNTIME, Role=ROLE,
                        Handler="lambda_function.lambda_handler", Code={"ZipFile": handler_zip()})
    yield name
    lam.delete_function(FunctionName=name)


def still_works(lam, name, bystander, cold=None):
    """The function and the bystander both answer; `cold` says whether the
    function's next invocation must be (True) or must not be (False) a
    fresh environment."""
    resp, body, log = invoke(lam, name, {"op": "ping"})
    assert "FunctionError" not in resp, body
    assert body == "pong"
    if cold is not None:
        assert (report(log)["init"] is not None) == cold, log
    resp, body, _ = invoke(lam, bystander, {"op": "ping"})
    assert "FunctionError" not in resp, body
    assert body == "pong"


# ---------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------

def test_memory_hog_is_killed_at_its_memory_size(lam, functions, bystander, cli):
    """128 MB function allocating 1 GB: the environment's cgroup stops it at
    128 MB, the kernel kills it, and the invoke (here through the AWS CLI)
    says so the way Lambda does."""
    name = unique("hog")
    functions.create(handler_zip(), name=name, MemorySize=128, Timeout=30)
    p = cli.run("lambda", "invoke", "--function-name", name, "--log-type", "Tail",
                *cli.payload_args('{"op": "hog"}'), "hog.json")
    out = json.loads(p.stdout)
    assert out["StatusCode"] == 200
    assert out["FunctionError"] == "Unhandled"
    body = json.loads((cli.cwd / "hog.json").read_text())
    log = base64.b64decode(out["LogResult"]).decode()
    rep = report(log)
    assert body["errorType"] == "Runtime.OutOfMemory", body
    assert body["errorMessage"] == (
        f"RequestId: {rep['id']} Error: Runtime exited with error: signal: killed"), body
    print(f"memory hog: Max Memory Used {rep['max_memory']} MB of {rep['memory']} MB")
    assert "allocated 16 MB" in log and "allocated 1024 MB" not in log
    assert rep["memory"] == "128"
    assert 115 <= int(rep["max_memory"]) <= 128, f"Max Memory Used {rep['max_memory']} MB"
    still_works(lam, name, bystander, cold=True)


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

def host_processes_in(pidns):
    """Host pids of the processes in this PID namespace (`pid:[inode]`, as
    /proc/self/ns/pid reads inside it), zombies included."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") == pidns:
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_fork_bomb_is_contained(lam, functions, bystander, server):
    """Forking until it fails: the environment's cgroup allows 1024 tasks,
    so fork() raises BlockingIOError (EAGAIN) after about a thousand, inside
    the sandbox only: the host can still fork, the server answers, and the
    leftover processes go when the environment does."""
    name = unique("forkbomb")
    functions.create(handler_zip(), name=name, MemorySize=1024, Timeout=60)
    resp, body, log = invoke(lam, name, {"op": "forkbomb"})
    assert "FunctionError" not in resp, body
    print(f"fork bomb: {body['forked']} forks, then {body['error']}")
    assert body["error"] == "BlockingIOError:EAGAIN", body
    # The runtime, init and the jail's monitor count too.
    assert PIDS_MAX - 8 <= body["forked"] < PIDS_MAX, body
    assert body["visible"] == body["forked"] + 2  # + init + the runtime

    # The host is fine.
    assert subprocess.run(["true"], timeout=10).returncode == 0
    assert server.healthy()
    assert lam.get_function(FunctionName=name)["Configuration"]["FunctionName"] == name

    # The environment still works, warm, with its 1000 children around.
    resp, count, _ = invoke(lam, name, {"op": "count"})
    assert "FunctionError" not in resp, count
    assert count["visible"] == body["visible"]
    # What it sees is what there is: the host finds the same processes.
    assert len(host_processes_in(count["pidns"])) == count["visible"]
    still_works(lam, name, bystander, cold=False)

    # Retiring the environment (a configuration change) takes them all.
    lam.update_function_configuration(FunctionName=name, Description="retired")
    wait_for(lambda: not host_processes_in(count["pidns"]), timeout=20,
             what="the fork bomb's processes to be killed with their environment")
    still_works(lam, name, bystander, cold=True)


def test_an_environment_lives_as_long_as_its_function_needs(lam, functions, bystander):
    """Containment must not cut a healthy function short: a 12 s
    invocation runs to its end and its environment stays warm.

    (Regression: the jail's helper is started with PR_SET_PDEATHSIG, which
    the kernel fires when the *thread* that forked it exits. Started from
    tokio's blocking pool, whose threads exit after 10 s without work, an
    environment was SIGKILLed about 10 s after its cold start, busy or idle:
    Runtime.ExitError "Runtime exited with error: signal: killed".)"""
    name = unique("long")
    functions.create(handler_zip(), name=name, Timeout=30)
    resp, body, log = invoke(lam, name, {"op": "sleep", "seconds": 12})
    assert "FunctionError" not in resp, body
    assert body["slept"] == 12
    assert float(report(log)["duration"]) >= 12000
    resp, again, log = invoke(lam, name, {"op": "sleep", "seconds": 0})
    assert "FunctionError" not in resp, again
    assert again["env"] == body["env"] and report(log)["init"] is None
    still_works(lam, name, bystander, cold=False)


# ---------------------------------------------------------------------------
# Disk
# ---------------------------------------------------------------------------

def test_disk_filler_gets_enospc_at_its_ephemeral_storage(lam, functions, bystander):
    """/tmp is a private tmpfs of EphemeralStorage MB. With memory to spare
    (2048 MB) the writer gets ENOSPC at 512 MiB. What it wrote stays for
    the next (warm) invocation of the same environment, as on Lambda, and no
    other function sees it."""
    name = unique("filler")
    functions.create(handler_zip(), name=name, MemorySize=2048, Timeout=60,
                     EphemeralStorage={"Size": 512})
    resp, body, log = invoke(lam, name, {"op": "fill"})
    assert "FunctionError" not in resp, body
    print(f"disk filler: {body['written']} bytes ({body['written'] / 2**20:.1f} MiB), "
          f"then {body['error']}; Max Memory Used {report(log)['max_memory']} MB")
    assert body["error"] == "OSError:ENOSPC", body
    assert 500 << 20 <= body["written"] <= (512 << 20) + (1 << 20), body
    # RAM-backed: the file counts toward the function's memory.
    assert int(report(log)["max_memory"]) >= 500

    resp, again, _ = invoke(lam, name, {"op": "tmp"})
    assert again["env"] == body["env"], "expected the warm environment"
    assert again["size"] == body["written"], "/tmp did not persist across warm invocations"

    other = unique("filler-neighbour")
    functions.create(handler_zip(), name=other)
    resp, theirs, _ = invoke(lam, other, {"op": "tmp"})
    assert "FunctionError" not in resp, theirs
    assert theirs["size"] is None, "another function sees this function's /tmp"

    # Freeing the space makes /tmp usable again in the same environment.
    resp, freed, _ = invoke(lam, name, {"op": "tmp", "remove": True, "write_mb": 100})
    assert freed["size"] == body["written"] and freed["written"] == 100 << 20
    still_works(lam, name, bystander, cold=False)


def test_disk_filler_with_default_sizes_runs_out_of_memory_first(lam, functions, bystander):
    """Default sizes (128 MB memory, 512 MB /tmp): /tmp is RAM-backed and
    charged to the environment's memory cgroup, so the writer reaches the
    128 MB memory limit long before 512 MB of /tmp and is OOM-killed, just
    as the memory hog is. (On Lambda /tmp is disk and the write would get
    ENOSPC at 512 MB; here a function that needs its full /tmp must be
    given MemorySize above EphemeralStorage plus what it uses itself.) The
    next invocation gets a fresh environment with an empty /tmp."""
    name = unique("filler-small")
    functions.create(handler_zip(), name=name, Timeout=30)
    resp, body, log = invoke(lam, name, {"op": "fill"})
    rep = report(log)
    assert resp.get("FunctionError") == "Unhandled", body
    assert body["errorType"] == "Runtime.OutOfMemory", body
    assert body["errorMessage"] == (
        f"RequestId: {rep['id']} Error: Runtime exited with error: signal: killed")
    print(f"default-size disk filler: {body['errorType']}, Max Memory Used "
          f"{rep['max_memory']} MB")
    assert 115 <= int(rep["max_memory"]) <= 128, rep

    resp, fresh, log = invoke(lam, name, {"op": "tmp"})
    assert "FunctionError" not in resp, fresh
    assert report(log)["init"] is not None
    assert fresh["size"] is None, "the new environment inherited the old /tmp"
    still_works(lam, name, bystander, cold=False)


# ---------------------------------------------------------------------------
# CPU
# ---------------------------------------------------------------------------

def host_cpu_share(seconds=0.5, threads=2):
    """CPU per wall second that two unconfined hashing threads of this test
    process get right now (2.0 on an idle two-core host, less when others
    keep its cores busy): what a function could get without its limit."""
    stop = time.monotonic() + seconds
    data = b"x" * (256 << 10)

    def burn():
        while time.monotonic() < stop:
            hashlib.sha256(data).digest()

    w0, c0 = time.monotonic(), time.process_time()
    workers = [threading.Thread(target=burn) for _ in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return (time.process_time() - c0) / (time.monotonic() - w0)


def test_open_files_are_limited_as_on_lambda(lam, functions, bystander):
    """RLIMIT_NOFILE is Lambda's 1,024: a handler opening files without end
    gets EMFILE just under it (the runtime holds a few), and its
    environment, once they are closed, goes on serving."""
    name = unique("fds")
    functions.create(handler_zip(), name=name)
    resp, body, _ = invoke(lam, name, {"op": "openfiles"})
    assert "FunctionError" not in resp, body
    assert body["limit"] == [1024, 1024], body
    assert body["error"] == "EMFILE", body
    assert 1000 <= body["opened"] < 1024, body
    still_works(lam, name, bystander, cold=False)


def test_cpu_share_follows_memory_size(lam, functions, bystander):
    """Lambda gives a function CPU in proportion to its memory, one vCPU at
    1769 MB. Two threads hashing for 1 s of wall time (they could use both
    of this host's cores): at 128 MB they get about 128/1769 = 7% of one
    CPU, at 1769 MB about one CPU and never more. Other work on the host
    lowers what the 1769 MB function gets, so that lower bound is set
    against what unconfined threads get just before and after."""
    small, full = unique("cpu-128"), unique("cpu-1769")
    functions.create(handler_zip(), name=small, MemorySize=128, Timeout=30)
    functions.create(handler_zip(), name=full, MemorySize=1769, Timeout=30)
    shares = {}
    for name in (small, full):
        resp, body, _ = invoke(lam, name, {"op": "ping"})  # init (unthrottled) is over
        assert "FunctionError" not in resp, body
    host_before = host_cpu_share()
    for name in (small, full):
        resp, body, _ = invoke(lam, name, {"op": "spin", "seconds": 1.0, "threads": 2})
        assert "FunctionError" not in resp, body
        shares[name] = body["cpu"] / body["wall"]
    host = min(host_before, host_cpu_share())
    print(f"CPU per wall second: 128 MB {shares[small]:.3f}, 1769 MB {shares[full]:.3f}, "
          f"unconfined {host:.3f}")
    assert 0.01 <= shares[small] <= 0.15, shares
    assert shares[full] <= 1.15, shares
    assert shares[full] >= 0.5 * min(1.0, host), (shares, host)
    for name in (small, full):
        still_works(lam, name, bystander, cold=False)


def test_background_threads_burn_no_cpu_while_idle(lam, functions, bystander):
    """A thread left spinning after the handler returns stops while the
    environment is idle (its cgroup is frozen) and runs again during the
    next invocation, as on Lambda."""
    name = unique("background")
    functions.create(handler_zip(), name=name, MemorySize=1769, Timeout=30)
    resp, first, _ = invoke(lam, name, {"op": "background"})
    assert "FunctionError" not in resp, first
    left = time.monotonic()
    time.sleep(1.0)
    resp, second, _ = invoke(lam, name, {"op": "cpu", "sleep": 0.5})
    idle = time.monotonic() - left
    assert "FunctionError" not in resp, second
    assert second["env"] == first["env"]
    assert second["spinner_alive"] is True
    burnt = second["cpu"] - first["cpu"]
    print(f"CPU used over {idle:.2f} s idle: {burnt:.3f} s")
    # Unfrozen, the spinner would have used ~1 s here.
    assert burnt < 0.25, f"{burnt:.2f} s of CPU while idle for {idle:.2f} s"
    # Thawed, it spins again while the handler sleeps.
    during = second["cpu_after_sleep"] - second["cpu"]
    assert during > 0.05, f"the background thread got {during:.2f} s of CPU in 0.5 s"
    still_works(lam, name, bystander, cold=False)


# ---------------------------------------------------------------------------
# What the function can see and touch
# ---------------------------------------------------------------------------

def test_proc_shows_only_the_sandbox(lam, functions, bystander, server):
    """/proc is the sandbox's own PID namespace: init (the jail helper) and
    the runtime; the server's pid does not exist there."""
    name = unique("proc")
    functions.create(handler_zip(), name=name)
    server_pid = server.proc.pid
    resp, body, _ = invoke(lam, name, {"op": "proc", "server_pid": server_pid})
    assert "FunctionError" not in resp, body
    assert body["pids"] == [1, body["self"]], body["pids"]
    assert body["ppid"] == 1
    assert server_pid not in body["pids"] and body["server_listed"] is False
    assert body["server_status"] == "FileNotFoundError:ENOENT"
    assert body["server_cmdline"] == "FileNotFoundError:ENOENT"
    init = body["init_cmdline"]
    assert init[1:] == ["__jail"], init  # the jail helper, not systemd or `nimbus serve`
    assert os.path.basename(init[0]) == "nimbus"
    assert body["init_environ"] == "PermissionError:EACCES"  # init is root, we are not
    assert body["status"]["Uid"].split() == [str(SANDBOX_UID)] * 4
    # Nothing of the jail's plumbing (its control socket to the server)
    # is left open in the runtime: stdio and its Runtime API connection.
    resp, fds, _ = invoke(lam, name, {"op": "fds"})
    assert "FunctionError" not in resp, fds
    assert fds["0"] == "/dev/null" and fds["1"].startswith("pipe:") and fds["1"] == fds["2"], fds
    for fd, what in fds.items():
        assert what.startswith(("pipe:", "socket:AF_INET", "/dev/null")), (fd, what, fds)
    still_works(lam, name, bystander, cold=False)


def test_data_dir_and_other_functions_code_are_out_of_reach(lam, functions, bystander, server):
    """The server's data directory (database, root credentials, the key
    that seals secrets, every function's unpacked code) does not exist in
    the sandbox; the function's own code is read-only; it runs as uid 993
    with no capabilities, no_new_privs and a seccomp filter, and its
    environment holds its role's session, not the server's keys."""
    data = server.data_dir
    other = unique("victim")
    victim = functions.create(make_zip({"lambda_function.py": "def lambda_handler(e, c):\n"
                                        "    return 'victim'\n",
                                        "secret.txt": "victim's secret"}), name=other)
    victim_code = data / "code" / base64.b64decode(victim["CodeSha256"]).hex()
    assert (victim_code / "secret.txt").read_text() == "victim's secret"  # on the host
    targets = [data, data / "nimbus.db", data / "credentials", data / "secrets.key",
               data / "code", victim_code, victim_code / "secret.txt", data / "run"]
    for p in targets:
        assert p.exists(), p  # so the checks below are not vacuous

    name = unique("snoop")
    functions.create(handler_zip(), name=name)
    writes = ["/var/task/lambda_function.py", "/var/task/new.txt", "/var/runtime/new.txt",
              "/etc/nimbus-was-here", "/usr/nimbus-was-here", "/nimbus-was-here", "/tmp/ok.txt"]
    resp, body, _ = invoke(lam, name, {"op": "files", "paths": [str(p) for p in targets],
                                       "writes": writes})
    assert "FunctionError" not in resp, body
    assert body["reads"] == {str(p): "FileNotFoundError:ENOENT" for p in targets}
    assert body["task"] == ["lambda_function.py"]
    # Its own (root-owned) file is refused by permissions before the mount's
    # read-only flag; creating anything is refused by the read-only mounts.
    assert body["writes"].pop("/var/task/lambda_function.py") in (
        "PermissionError:EACCES", "OSError:EROFS")
    assert body["writes"] == {**{p: "OSError:EROFS" for p in writes[1:-1]}, "/tmp/ok.txt": "ok"}
    mounts = body["mounts"]
    assert mounts["/"] == mounts["/var/task"] == mounts["/var/runtime"] == mounts["/usr"] == "ro"
    assert mounts["/tmp"] == "rw"
    assert body["ids"] == [SANDBOX_UID, SANDBOX_UID, SANDBOX_UID, SANDBOX_UID, []]
    assert body["status"] == {"CapEff": "0000000000000000", "CapPrm": "0000000000000000",
                              "CapInh": "0000000000000000", "CapAmb": "0000000000000000",
                              "NoNewPrivs": "1", "Seccomp": "2"}
    # Nothing but its own code on the sandbox's own filesystems (so no other
    # function's code is reachable by any path, not just the host one).
    resp, walk, _ = invoke(lam, name, {"op": "walk"})
    assert "FunctionError" not in resp, walk
    assert [f for f in walk["files"] if not f.startswith("/tmp/")] == [
        "/var/task/lambda_function.py"], walk
    env = body["env"]
    assert not [k for k in env if k.startswith("NIMBUS")], env
    assert not [k for k, v in env.items() if ACCESS_KEY in v or SECRET_KEY in v]
    assert env["AWS_ACCESS_KEY_ID"].startswith("ASIA") and env["AWS_SESSION_TOKEN"]
    resp, v, _ = invoke(lam, other, {})
    assert "FunctionError" not in resp and v == "victim"
    still_works(lam, name, bystander, cold=False)


def test_signals_ptrace_mount_and_namespaces_are_refused(lam, functions, bystander, server):
    """The function can signal its own processes only: init refuses
    (EPERM), the server's pid does not exist; ptrace, mount, unshare, setns
    and namespace-creating clone fail with EPERM (seccomp)."""
    name = unique("signals")
    functions.create(handler_zip(), name=name)
    _, before, _ = invoke(lam, bystander, {"op": "count"})  # a warm environment, also uid 993
    resp, body, _ = invoke(lam, name, {"op": "signals", "server_pid": server.proc.pid})
    assert "FunctionError" not in resp, body
    me, child = body["self"], body["child"]
    assert body["kill"] == {"1": "PermissionError:EPERM", str(child): "ok"}, body["kill"]
    assert body["child_status"] == 9  # killed by its own SIGKILL
    assert body["kill_server"] == "ProcessLookupError:ESRCH"
    assert body["kill_all"] == "ok" and body["child2_status"] == 9
    assert body["alive_after"] == [1, me]
    resp, after, _ = invoke(lam, bystander, {"op": "count"})
    assert "FunctionError" not in resp, after
    assert after["env"] == before["env"], "kill(-1) reached another sandbox's runtime"
    for call in ("ptrace_child", "ptrace_init", "ptrace_traceme", "mount", "unshare_user",
                 "unshare_net", "setns"):
        assert body[call] == "EPERM", (call, body[call])
    if platform.machine() in ("x86_64", "aarch64"):
        assert body["clone_newuser"] == "EPERM"
    assert server.healthy()
    still_works(lam, name, bystander, cold=False)


def host_address():
    """This host's address on its default route, if it has one."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
        addr = s.getsockname()[0]
        return None if addr.startswith("127.") else addr
    except OSError:
        return None
    finally:
        s.close()


def test_network_reaches_only_nimbus(lam, functions, bystander, server):
    """Inside its own network namespace the function reaches its Runtime
    API and the nimbus API (boto3 with its role's credentials) and nothing
    else: a TCP server of this test on the host, on loopback or the host's
    own address, is unreachable, and so is an abstract unix socket of it."""
    iam = server.client("iam")
    role = unique("net-role")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
         "Action": "sts:AssumeRole"}]}
    arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=role, PolicyName="list", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "lambda:ListFunctions", "Resource": "*"}]}))

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    accepted = []

    def accept():
        while True:
            try:
                conn, peer = listener.accept()
            except OSError:
                return
            accepted.append(peer)
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    # Abstract unix sockets belong to a network namespace too.
    abstract = unique("nimbus-e2e-abstract")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(b"\0" + abstract.encode())
    unix.listen(1)
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # it does listen
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(b"\0" + abstract.encode())
        probe.close()
        wait_for(lambda: len(accepted) == 1, timeout=5, what="the probe connection")
        targets = [("127.0.0.1", port), ("localhost", port)]
        addr = host_address()
        if addr:
            targets.append((addr, port))
        server_port = int(server.url.rsplit(":", 1)[1])

        name = unique("net")
        functions.create(handler_zip(), name=name, Role=arn, Timeout=30)
        resp, body, _ = invoke(lam, name, {"op": "net", "targets": targets,
                                           "abstract": abstract})
        assert "FunctionError" not in resp, body
        print(f"network: {body['targets']}")
        for (host, p) in targets:
            got = body["targets"][f"{host}:{p}"]
            if host == addr:  # no route out of the sandbox (today: only `lo`)
                assert got != "ok", (host, got)
            else:  # its own loopback, where nothing listens on that port
                assert got == "ConnectionRefusedError:ECONNREFUSED", (host, got)
        assert len(accepted) == 1, f"the function connected to the host: {accepted}"
        assert body["abstract"] == "ConnectionRefusedError:ECONNREFUSED"
        assert body["runtime_api"] == "127.0.0.1:9001"
        assert body["runtime_api_connect"] == "ok"
        assert body["endpoint"] == f"http://127.0.0.1:{server_port}"
        assert name in body["functions"] and bystander in body["functions"]
        assert body["caller"].endswith(f":assumed-role/{role}/{name}"), body["caller"]
        still_works(lam, name, bystander, cold=False)
    finally:
        listener.close()
        unix.close()


# ---------------------------------------------------------------------------
# Plain processes
# ---------------------------------------------------------------------------

def test_plain_process_mode_runs_functions_unjailed(own_server):
    """`--isolation process` (development, or when not root) still runs
    functions, as plain processes of the server's user: the function sees
    the host's /proc, the server among it, and the data directory. This is
    the difference the jail makes."""
    srv = own_server(args=["--isolation", "process"])
    lam = srv.client()
    name = "plain"
    lam.create_function(FunctionName=name, Runtime=PY_RUNTIME, Role=ROLE,
                        Handler="lambda_function.lambda_handler", Code={"ZipFile": handler_zip()})
    resp, body, log = invoke(lam, name, {"op": "proc", "server_pid": srv.proc.pid})
    assert "FunctionError" not in resp, body
    assert report(log)["init"] is not None
    assert srv.proc.pid in body["pids"] and body["server_listed"] is True
    assert body["server_status"] == "ok"  # same user: nothing stops it
    assert body["self"] in body["pids"] and len(body["pids"]) > 2
    assert body["status"]["Uid"].split()[0] == str(os.getuid())
    assert "__jail" not in body["init_cmdline"]
    resp, files, _ = invoke(lam, name, {"op": "files", "paths": [str(srv.data_dir / "credentials")]})
    assert "FunctionError" not in resp, files
    assert files["reads"] == {str(srv.data_dir / "credentials"): "ok"}
    assert files["status"]["Seccomp"] == "0"
    resp, body, log = invoke(lam, name, {"op": "ping"})
    assert body == "pong" and report(log)["init"] is None
