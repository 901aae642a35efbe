"""Network egress of jailed functions, and the `nimbus:network` tag.

By default a jailed function reaches the network through a veth pair to the
host, masqueraded; the host's own addresses stay out of reach (except DNS).
The tag `nimbus:network=none` (CreateFunction Tags or TagResource) leaves it
only loopback, where the Runtime API and the nimbus endpoint are. Either
way the function reaches nimbus with boto3 through AWS_ENDPOINT_URL.

There is no internet here, so the test makes its own remote host: a network
namespace behind a veth pair, with a TCP server that answers every
connection with the address it came from (the host's, once masqueraded).

Needs root and `ip` (iproute2): runs when NIMBUS_PRIVILEGED_TESTS=1, which
scripts/test.sh sets when root (CI is).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading

import pytest
from botocore.exceptions import ClientError

from conftest import invoke, py_zip, unique

pytestmark = pytest.mark.skipif(
    os.environ.get("NIMBUS_PRIVILEGED_TESTS") != "1",
    reason="network tests need root: set NIMBUS_PRIVILEGED_TESTS=1 (scripts/test.sh does when root)")

NETWORK_TAG = "nimbus:network"

HANDLER = r'''
import socket, time
import boto3


def lambda_handler(event, context):
    out = {}
    for key, (host, port) in event["targets"].items():
        started = time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=3) as s:
                out[key] = "ok " + s.recv(64).decode()
        except OSError as e:
            out[key] = f"{type(e).__name__}: {e}"
        out[key + "_seconds"] = time.monotonic() - started
    with open("/proc/net/dev") as f:
        out["interfaces"] = sorted(l.split(":")[0].strip() for l in f.read().splitlines()[2:])
    functions = boto3.client("lambda").list_functions()["Functions"]
    out["functions"] = [f["FunctionName"] for f in functions]
    return out
'''

# Answers each connection with the peer's address.
ECHO_PEER = r'''
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 0))
s.listen(16)
print(s.getsockname()[1], flush=True)
while True:
    c, peer = s.accept()
    c.sendall(peer[0].encode())
    c.close()
'''


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def remote():
    """A host "out there": (its address, its port, the host's address on
    the link to it)."""
    if shutil.which("ip") is None:
        pytest.skip("needs ip (iproute2)")
    pid = os.getpid()
    netns, link = f"nimbus-e2e-{pid}", f"rmte{pid % 10_000_000}"
    host_addr, addr = "198.18.102.1", "198.18.102.2"
    server = None
    try:
        ip("netns", "add", netns)
        ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns)
        ip("addr", "add", f"{host_addr}/30", "dev", link)
        ip("link", "set", link, "up")
        ip("-n", netns, "addr", "add", f"{addr}/30", "dev", "eth0")
        ip("-n", netns, "link", "set", "eth0", "up")
        ip("-n", netns, "link", "set", "lo", "up")
        server = subprocess.Popen(
            ["ip", "netns", "exec", netns, sys.executable, "-c", ECHO_PEER, addr],
            stdout=subprocess.PIPE, text=True)
        port = int(server.stdout.readline())
        yield addr, port, host_addr
    finally:
        if server is not None:
            server.kill()
            server.wait(10)
        subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


@pytest.fixture(scope="module")
def host_service():
    """A TCP server on every address of the host; counts connections."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 0))
    listener.listen(16)
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
    yield listener.getsockname()[1], accepted
    listener.close()


def host_address():
    """This host's address on its default route (eth0 here)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # nothing is sent
        return s.getsockname()[0]
    finally:
        s.close()


@pytest.fixture(scope="module")
def role(server):
    """An execution role that may list functions."""
    iam = server.client("iam")
    name = unique("net-role")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
         "Action": "sts:AssumeRole"}]}
    arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    iam.put_role_policy(RoleName=name, PolicyName="list", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "lambda:ListFunctions", "Resource": "*"}]}))
    return arn


def probe(lam, name, remote, host_service):
    addr, port, _ = remote
    targets = {"remote": [addr, port], "host": [host_address(), host_service[0]]}
    resp, body, log = invoke(lam, name, {"targets": targets})
    assert "FunctionError" not in resp, (body, log)
    return body


def assert_egress(body, name, remote, host_service):
    # Routed through the host and masqueraded: the remote end sees the
    # host's address on its link, not the sandbox's.
    assert body["remote"] == f"ok {remote[2]}", body
    assert "eth0" in body["interfaces"], body
    # The host's own addresses are not for functions.
    assert not body["host"].startswith("ok"), body
    assert host_service[1] == [], f"a function connected to the host: {host_service[1]}"
    assert name in body["functions"], body


def assert_loopback_only(body, name):
    assert body["interfaces"] == ["lo"], body
    for key in ("remote", "host"):
        assert "unreachable" in body[key], body
        assert body[key + "_seconds"] < 1, body  # refused at once, no timeout
    assert name in body["functions"], body


def test_functions_reach_the_network_by_default(lam, functions, role, remote, host_service):
    name = unique("net-default")
    functions.python(HANDLER, name=name, Role=role, Timeout=30)
    assert_egress(probe(lam, name, remote, host_service), name, remote, host_service)


def test_the_network_tag_leaves_only_loopback(lam, functions, role, remote, host_service):
    name = unique("net-none")
    functions.python(HANDLER, name=name, Role=role, Timeout=30, Tags={NETWORK_TAG: "none"})
    assert lam.get_function(FunctionName=name)["Tags"] == {NETWORK_TAG: "none"}
    assert_loopback_only(probe(lam, name, remote, host_service), name)


def test_tagging_switches_the_network_of_new_environments(
        lam, functions, role, remote, host_service):
    name = unique("net-switch")
    arn = functions.python(HANDLER, name=name, Role=role, Timeout=30)["FunctionArn"]
    assert_egress(probe(lam, name, remote, host_service), name, remote, host_service)

    lam.tag_resource(Resource=arn, Tags={NETWORK_TAG: "none", "team": "e2e"})
    assert lam.list_tags(Resource=arn)["Tags"] == {NETWORK_TAG: "none", "team": "e2e"}
    # The warm environment had egress: it is retired, the next one has none.
    assert_loopback_only(probe(lam, name, remote, host_service), name)

    lam.untag_resource(Resource=arn, TagKeys=[NETWORK_TAG])
    assert lam.list_tags(Resource=arn)["Tags"] == {"team": "e2e"}
    assert_egress(probe(lam, name, remote, host_service), name, remote, host_service)


def test_the_network_tag_takes_none_or_egress(lam, functions):
    name = unique("net-bad")
    with pytest.raises(ClientError) as e:
        functions.python(HANDLER, name=name, Tags={NETWORK_TAG: "off"})
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    arn = functions.python(HANDLER, name=name)["FunctionArn"]
    with pytest.raises(ClientError) as e:
        lam.tag_resource(Resource=arn, Tags={NETWORK_TAG: "sometimes"})
    assert e.value.response["Error"]["Code"] == "InvalidParameterValueException"
    lam.tag_resource(Resource=arn, Tags={NETWORK_TAG: "egress"})
    assert lam.list_tags(Resource=arn)["Tags"] == {NETWORK_TAG: "egress"}
