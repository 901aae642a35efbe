"""Error paths: each answers the AWS error code, and the server keeps serving.

botocore validates `min` constraints client-side (MemorySize 127, Timeout 0
never leave boto3 or the AWS CLI), so those are also sent with parameter
validation turned off, which is what reaches the server from any other SDK.
"""

import io
import json
import os
import zipfile

import pytest
from botocore.exceptions import ClientError, ParamValidationError

from conftest import PY_RUNTIME, ROLE, error_code, invoke, make_zip, py_zip, unique

ECHO = """def lambda_handler(event, context):
    return event
"""


@pytest.fixture(autouse=True)
def still_serving(server, lam):
    yield
    assert server.healthy(), "nimbus stopped answering /_nimbus/health"
    lam.list_functions(MaxItems=1)


@pytest.fixture(scope="module")
def raw_lam(server):
    """A boto3 client that sends what it is given, unvalidated."""
    return server.client("lambda", parameter_validation=False)


@pytest.fixture(scope="module")
def target(lam):
    """One function the configuration errors are aimed at."""
    name = unique("err-target")
    lam.create_function(FunctionName=name, Runtime=PY_RUNTIME, Role=ROLE,
                        Handler="lambda_function.lambda_handler", Code={"ZipFile": py_zip(ECHO)})
    yield name
    lam.delete_function(FunctionName=name)


def client_error(call, **kw):
    with pytest.raises(ClientError) as e:
        call(**kw)
    r = e.value.response
    return r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"], r["Error"].get("Message", "")


def create_args(zip_bytes=None, **kw):
    args = dict(FunctionName=unique("bad"), Runtime=PY_RUNTIME, Role=ROLE,
                Handler="lambda_function.lambda_handler",
                Code={"ZipFile": zip_bytes or py_zip(ECHO)})
    args.update(kw)
    return args


def assert_not_created(lam, name):
    with pytest.raises(ClientError) as e:
        lam.get_function(FunctionName=name)
    assert error_code(e) == "ResourceNotFoundException"


@pytest.mark.parametrize("field,value", [("MemorySize", 127), ("Timeout", 0)])
def test_below_minimum_refused_by_botocore_and_server(lam, raw_lam, target, field, value):
    # botocore itself refuses it: nothing reaches the server from boto3...
    with pytest.raises(ParamValidationError):
        lam.update_function_configuration(FunctionName=target, **{field: value})
    # ...but another client can send it, and the server refuses it too.
    code, status, msg = client_error(raw_lam.update_function_configuration,
                                     FunctionName=target, **{field: value})
    assert (code, status) == ("ValidationException", 400)
    assert str(value) in msg
    args = create_args(**{field: value})
    code, status, _ = client_error(raw_lam.create_function, **args)
    assert (code, status) == ("ValidationException", 400)
    assert_not_created(lam, args["FunctionName"])
    cfg = lam.get_function_configuration(FunctionName=target)
    assert (cfg["MemorySize"], cfg["Timeout"]) == (128, 3)


@pytest.mark.parametrize("field,value", [("MemorySize", 10241), ("Timeout", 901)])
def test_above_maximum(lam, target, field, value):
    # botocore does not check maxima: this reaches the server from boto3.
    code, status, msg = client_error(lam.update_function_configuration,
                                     FunctionName=target, **{field: value})
    assert (code, status) == ("ValidationException", 400)
    assert str(value) in msg
    args = create_args(**{field: value})
    code, _, _ = client_error(lam.create_function, **args)
    assert code == "ValidationException"
    assert_not_created(lam, args["FunctionName"])


def test_limits_through_the_aws_cli(cli, target):
    p = cli.run("lambda", "update-function-configuration", "--function-name", target,
                "--memory-size", "127", check=False)
    assert p.returncode != 0
    assert "MemorySize" in p.stderr and "128" in p.stderr  # refused by the CLI itself
    p = cli.run("lambda", "update-function-configuration", "--function-name", target,
                "--memory-size", "10241", check=False)
    assert p.returncode != 0
    assert "(ValidationException)" in p.stderr
    p = cli.run("lambda", "update-function-configuration", "--function-name", target,
                "--timeout", "901", check=False)
    assert "(ValidationException)" in p.stderr
    cfg = cli.json("lambda", "get-function-configuration", "--function-name", target)
    assert (cfg["MemorySize"], cfg["Timeout"]) == (128, 3)


def test_environment_over_4kb(lam, target):
    big = {"BIG_VALUE": "x" * 4096}
    code, status, msg = client_error(lam.update_function_configuration, FunctionName=target,
                                     Environment={"Variables": big})
    assert (code, status) == ("InvalidParameterValueException", 400)
    assert "4KB" in msg
    args = create_args(Environment={"Variables": big})
    assert client_error(lam.create_function, **args)[0] == "InvalidParameterValueException"
    assert_not_created(lam, args["FunctionName"])
    # Just under the limit is fine.
    ok = {"BIG_VALUE": "x" * 3000}
    lam.update_function_configuration(FunctionName=target, Environment={"Variables": ok})
    assert lam.get_function_configuration(FunctionName=target)["Environment"]["Variables"] == ok
    lam.update_function_configuration(FunctionName=target, Environment={"Variables": {}})


@pytest.mark.parametrize("key", ["AWS_REGION", "AWS_LAMBDA_FUNCTION_NAME", "AWS_ACCESS_KEY_ID",
                                 "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT"])
def test_reserved_environment_key(lam, target, key):
    code, status, msg = client_error(lam.update_function_configuration, FunctionName=target,
                                     Environment={"Variables": {key: "mine"}})
    assert (code, status) == ("InvalidParameterValueException", 400)
    assert key in msg and "reserved" in msg


def test_invalid_environment_key(lam, target):
    # Keys must match [a-zA-Z]([a-zA-Z0-9_])+ (so `_HANDLER` cannot even be named).
    for key in ("_HANDLER", "1ABC", "A-B"):
        code, status, _ = client_error(lam.update_function_configuration, FunctionName=target,
                                       Environment={"Variables": {key: "x"}})
        assert (code, status) == ("ValidationException", 400), key


def test_unknown_runtime_names_available_ones(lam, target):
    args = create_args(Runtime="python3.99")
    code, status, msg = client_error(lam.create_function, **args)
    assert (code, status) == ("InvalidParameterValueException", 400)
    assert "python3.99" in msg
    assert PY_RUNTIME in msg and "provided.al2023" in msg, msg
    assert_not_created(lam, args["FunctionName"])
    code, _, msg = client_error(lam.update_function_configuration, FunctionName=target,
                                Runtime="python3.99")
    assert code == "InvalidParameterValueException" and PY_RUNTIME in msg


def test_unsupported_runtime(lam):
    args = create_args(Runtime="java21", Handler="example.Handler::handleRequest")
    code, status, msg = client_error(lam.create_function, **args)
    assert (code, status) == ("InvalidParameterValueException", 400)
    assert "java21" in msg
    assert_not_created(lam, args["FunctionName"])


def test_payload_over_6mb(lam, target):
    too_big = b'"' + b"a" * (6 * 1024 * 1024) + b'"'
    code, status, _ = client_error(lam.invoke, FunctionName=target, Payload=too_big)
    assert (code, status) == ("RequestTooLargeException", 413)


def test_event_payload_limit(lam, target):
    # Asynchronous invocations take at most 1 MB.
    code, status, _ = client_error(lam.invoke, FunctionName=target, InvocationType="Event",
                                   Payload=b'"' + b"a" * (1024 * 1024) + b'"')
    assert (code, status) == ("RequestTooLargeException", 413)
    resp = lam.invoke(FunctionName=target, InvocationType="Event",
                      Payload=b'"' + b"a" * (300 * 1024) + b'"')
    assert resp["StatusCode"] == 202


@pytest.mark.parametrize("bad", ["a" * 65, "has space", "semi;colon", "x:y:z:w:v"])
def test_invalid_function_name(raw_lam, lam, bad):
    code, status, _ = client_error(raw_lam.create_function, **create_args(FunctionName=bad))
    assert (code, status) == ("ValidationException", 400), bad


def test_payload_of_exactly_6mb_is_accepted(lam, functions):
    name = unique("six-mb")
    functions.python("def lambda_handler(event, context):\n    return len(event)\n",
                     name=name, MemorySize=512)
    limit = 6 * 1024 * 1024
    body = b'"' + b"a" * (limit - 2) + b'"'
    assert len(body) == limit
    resp = lam.invoke(FunctionName=name, Payload=body)
    assert "FunctionError" not in resp
    assert json.loads(resp["Payload"].read()) == limit - 2


@pytest.mark.parametrize("body", [b"not json{", b"{\"a\": ", b"\xff\xfe"])
def test_non_json_payload(lam, target, body):
    code, status, _ = client_error(lam.invoke, FunctionName=target, Payload=body)
    assert (code, status) == ("InvalidRequestContentException", 400)


def test_invalid_client_context(raw_lam, target):
    code, status, _ = client_error(raw_lam.invoke, FunctionName=target, Payload=b"{}",
                                   ClientContext="%%% not base64 %%%")
    assert (code, status) == ("InvalidRequestContentException", 400)


def _assert_zip_refused(lam, server, zip_bytes, marker=None):
    args = create_args(zip_bytes)
    code, status, msg = client_error(lam.create_function, **args)
    assert (code, status) == ("InvalidParameterValueException", 400), msg
    assert_not_created(lam, args["FunctionName"])
    if marker:
        for root, _, files in os.walk(server.data_dir):
            assert marker not in files, f"{marker} written to {root}"
    return msg


def test_zip_with_path_traversal(lam, server, target):
    for evil in ("../escaped-e2e-marker.py", "../../escaped-e2e-marker.py",
                 "sub/../../escaped-e2e-marker.py", "/tmp/escaped-e2e-marker.py"):
        z = make_zip({"lambda_function.py": ECHO, evil: "print('escaped')\n"})
        _assert_zip_refused(lam, server, z, marker="escaped-e2e-marker.py")
        assert not os.path.exists("/tmp/escaped-e2e-marker.py")
    # UpdateFunctionCode refuses it too, and the function keeps its code.
    code, _, _ = client_error(lam.update_function_code, FunctionName=target,
                              ZipFile=make_zip({"lambda_function.py": ECHO,
                                                "../escaped-e2e-marker.py": "x"}))
    assert code == "InvalidParameterValueException"
    _, body, _ = invoke(lam, target, {"still": "here"}, tail=False)
    assert body == {"still": "here"}


def _symlink_zip(link_name, link_target):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("lambda_function.py", ECHO)
        info = zipfile.ZipInfo(link_name)
        info.create_system = 3
        info.external_attr = (0o120777 << 16)
        z.writestr(info, link_target)
    return buf.getvalue()


@pytest.mark.parametrize("link_target", ["/etc/passwd", "../../../../etc/passwd", "/"])
def test_zip_with_symlink_pointing_out(lam, server, link_target):
    msg = _assert_zip_refused(lam, server, _symlink_zip("passwd", link_target))
    assert msg


def test_zip_with_symlink_inside_is_fine(lam, functions):
    """A link to a file in the package itself is legitimate (Lambda keeps it)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("real.py", "def lambda_handler(e, c):\n    return 'via link'\n")
        info = zipfile.ZipInfo("lambda_function.py")
        info.create_system = 3
        info.external_attr = (0o120777 << 16)
        z.writestr(info, "real.py")
    name = unique("link-ok")
    functions.create(buf.getvalue(), name=name)
    _, body, _ = invoke(lam, name, tail=False)
    assert body == "via link"


@pytest.fixture(scope="module")
def zip_bomb():
    """A small zip that unpacks to 260 MB of zeros (over the 250 MB limit)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("lambda_function.py", ECHO)
        chunk = bytes(16 * 1024 * 1024)
        with z.open("zeros.bin", "w", force_zip64=True) as f:
            for _ in range(260 // 16 + 1):
                f.write(chunk)
    data = buf.getvalue()
    assert len(data) < 1024 * 1024
    return data


def test_zip_bomb(lam, server, zip_bomb):
    msg = _assert_zip_refused(lam, server, zip_bomb)
    assert msg


def test_zip_bomb_with_lying_sizes(lam, server, zip_bomb):
    """The same bomb with its headers claiming 1 KB: the unpacker must
    count what it inflates, not trust the header."""
    data = bytearray(zip_bomb)
    with zipfile.ZipFile(io.BytesIO(zip_bomb)) as z:
        info = z.getinfo("zeros.bin")
    # Patch the zip64 extra fields (local header and central directory):
    # uncompressed size -> 1024.
    real = info.file_size.to_bytes(8, "little")
    count = 0
    start = 0
    while True:
        i = data.find(real, start)
        if i < 0:
            break
        data[i:i + 8] = (1024).to_bytes(8, "little")
        count += 1
        start = i + 8
    assert count >= 1
    _assert_zip_refused(lam, server, bytes(data))


@pytest.mark.parametrize("garbage", [b"this is not a zip file at all",
                                     b"PK\x03\x04" + b"\x00" * 100,
                                     b""])
def test_garbage_zip(lam, garbage):
    args = create_args()
    args["Code"] = {"ZipFile": garbage}
    code, status, _ = client_error(lam.create_function, **args)
    assert (code, status) == ("InvalidParameterValueException", 400)
    assert_not_created(lam, args["FunctionName"])


def test_missing_required_parameters(raw_lam, lam):
    args = create_args()
    del args["Runtime"]
    code, _, _ = client_error(raw_lam.create_function, **args)
    assert code == "InvalidParameterValueException"
    assert_not_created(lam, args["FunctionName"])
    args = create_args(Role="not-an-arn")
    code, _, _ = client_error(raw_lam.create_function, **args)
    assert code in ("ValidationException", "InvalidParameterValueException")
    assert_not_created(lam, args["FunctionName"])
