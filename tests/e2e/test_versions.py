"""Versions and aliases through boto3 and the AWS CLI: PublishVersion (and
Publish on create/update), qualified Get/Invoke/Delete, ListVersionsByFunction,
CreateAlias/GetAlias/UpdateAlias/DeleteAlias/ListAliases with routing
weights, and the version in the environment, the START line and the log
stream."""

import json
import re
import urllib.request

import pytest
from botocore.exceptions import ClientError

from conftest import ACCOUNT, REGION, error_code, invoke, py_zip, unique, wait_for

TAGGED = """import os

print("loading %(tag)s")

def lambda_handler(event, context):
    return {"code": "%(tag)s", "version": os.environ["AWS_LAMBDA_FUNCTION_VERSION"],
            "memory": context.memory_limit_in_mb, "arn": context.invoked_function_arn,
            "stream": context.log_stream_name}
"""


def tagged(tag):
    return py_zip(TAGGED % {"tag": tag})


def arn(name, qualifier=None):
    base = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


def test_a_version_keeps_its_code_and_configuration(lam, functions):
    name = unique("ver")
    old_zip = tagged("old")
    created = functions.create(old_zip, name=name, Publish=True, MemorySize=128)
    assert created["Version"] == "1" and created["FunctionArn"] == arn(name, "1")
    lam.update_function_code(FunctionName=name, ZipFile=tagged("new"))
    lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig={"Delay": 1})
    lam.update_function_configuration(FunctionName=name, MemorySize=256)

    resp, body, log = invoke(lam, name)
    assert resp["ExecutedVersion"] == "$LATEST"
    assert body["code"] == "new" and body["memory"] == "256" and body["version"] == "$LATEST"
    resp, body, log = invoke(lam, name, Qualifier="1")
    assert resp["ExecutedVersion"] == "1"
    assert body == {"code": "old", "version": "1", "memory": "128", "arn": arn(name, "1"),
                    "stream": body["stream"]}
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[1\][0-9a-f]{32}", body["stream"]), body["stream"]
    assert re.search(r"^START RequestId: \S+ Version: 1$", log, re.M), log
    # The function name may carry the qualifier too.
    assert invoke(lam, f"{name}:1", tail=False)[1]["code"] == "old"
    assert invoke(lam, arn(name, "1"), tail=False)[1]["code"] == "old"

    # GetFunction of the version: its configuration and its own package.
    got = lam.get_function(FunctionName=name, Qualifier="1")
    cfg = got["Configuration"]
    assert cfg["Version"] == "1" and cfg["MemorySize"] == 128 and cfg["FunctionArn"] == arn(name, "1")
    with urllib.request.urlopen(got["Code"]["Location"], timeout=30) as r:
        assert r.read() == old_zip
    assert lam.get_function_configuration(FunctionName=name)["Version"] == "$LATEST"

    v2 = lam.publish_version(FunctionName=name, Description="the new one")
    assert v2["Version"] == "2" and v2["Description"] == "the new one" and v2["MemorySize"] == 256
    assert v2["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert lam.publish_version(FunctionName=name)["Version"] == "2", "unchanged: no new version"
    with pytest.raises(ClientError) as e:
        lam.publish_version(FunctionName=name, CodeSha256="AAAA")
    assert error_code(e) == "InvalidParameterValueException"
    versions = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v["Version"] for v in versions] == ["$LATEST", "1", "2"]
    pages = lam.get_paginator("list_versions_by_function").paginate(
        FunctionName=name, PaginationConfig={"PageSize": 1})
    assert [v["Version"] for p in pages for v in p["Versions"]] == ["$LATEST", "1", "2"]

    # UpdateFunctionCode with Publish answers with the new version.
    v3 = lam.update_function_code(FunctionName=name, ZipFile=tagged("newest"), Publish=True)
    assert v3["Version"] == "3"
    assert invoke(lam, name, Qualifier="3", tail=False)[1]["code"] == "newest"
    assert invoke(lam, name, Qualifier="2", tail=False)[1]["code"] == "new"


def test_list_functions_with_all_versions(lam, functions):
    name = unique("vall")
    functions.create(tagged("a"), name=name, Publish=True)
    lam.update_function_code(FunctionName=name, ZipFile=tagged("b"), Publish=True)
    pages = lam.get_paginator("list_functions").paginate(
        FunctionVersion="ALL", PaginationConfig={"PageSize": 1})
    mine = [f["Version"] for p in pages for f in p["Functions"] if f["FunctionName"] == name]
    assert mine == ["$LATEST", "1", "2"]
    plain = [f["Version"] for p in lam.get_paginator("list_functions").paginate()
             for f in p["Functions"] if f["FunctionName"] == name]
    assert plain == ["$LATEST"]


def test_resource_policies_are_the_functions(lam, functions):
    name = unique("vpol")
    functions.create(tagged("a"), name=name, Publish=True)
    with pytest.raises(ClientError) as e:
        lam.add_permission(FunctionName=name, Qualifier="1", StatementId="s",
                           Action="lambda:InvokeFunction", Principal="s3.amazonaws.com")
    assert error_code(e) == "InvalidParameterValueException"
    with pytest.raises(ClientError) as e:
        lam.add_permission(FunctionName=name, Qualifier="7", StatementId="s",
                           Action="lambda:InvokeFunction", Principal="s3.amazonaws.com")
    assert error_code(e) == "ResourceNotFoundException"


def test_versions_are_deleted_one_by_one(lam, functions):
    name = unique("vdel")
    functions.create(tagged("a"), name=name, Publish=True)
    lam.update_function_code(FunctionName=name, ZipFile=tagged("b"), Publish=True)
    with pytest.raises(ClientError) as e:
        lam.delete_function(FunctionName=name, Qualifier="$LATEST")
    assert error_code(e) == "InvalidParameterValueException"
    lam.delete_function(FunctionName=name, Qualifier="1")
    for call in (lambda: lam.get_function(FunctionName=name, Qualifier="1"),
                 lambda: lam.invoke(FunctionName=name, Qualifier="1", Payload=b"{}"),
                 lambda: lam.delete_function(FunctionName=name, Qualifier="1")):
        with pytest.raises(ClientError) as e:
            call()
        assert error_code(e) == "ResourceNotFoundException"
        assert arn(name, "1") in e.value.response["Error"]["Message"]
    assert [v["Version"] for v in lam.list_versions_by_function(FunctionName=name)["Versions"]] \
        == ["$LATEST", "2"]
    assert invoke(lam, name, Qualifier="2", tail=False)[1]["code"] == "b"
    lam.update_function_code(FunctionName=name, ZipFile=tagged("c"))
    assert lam.publish_version(FunctionName=name)["Version"] == "3", "numbers are not reused"


def test_aliases(lam, functions):
    name = unique("alias")
    functions.create(tagged("one"), name=name, Publish=True)
    lam.update_function_code(FunctionName=name, ZipFile=tagged("two"), Publish=True)

    created = lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1",
                               Description="production")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert created["AliasArn"] == arn(name, "live")
    assert created["FunctionVersion"] == "1" and created["RevisionId"]
    resp, body, _ = invoke(lam, name, Qualifier="live")
    assert resp["ExecutedVersion"] == "1" and body["code"] == "one"
    assert body["arn"] == arn(name, "live"), "the runtime sees the ARN that was invoked"
    cfg = lam.get_function_configuration(FunctionName=f"{name}:live")
    assert cfg["Version"] == "1" and cfg["FunctionArn"] == arn(name, "live")

    with pytest.raises(ClientError) as e:
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="2")
    assert error_code(e) == "ResourceConflictException"
    with pytest.raises(ClientError) as e:
        lam.create_alias(FunctionName=name, Name="123", FunctionVersion="2")
    assert error_code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        lam.create_alias(FunctionName=name, Name="nope", FunctionVersion="7")
    assert error_code(e) == "ResourceNotFoundException"

    with pytest.raises(ClientError) as e:
        lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2",
                         RevisionId="stale")
    assert error_code(e) == "PreconditionFailedException"
    moved = lam.update_alias(FunctionName=name, Name="live", FunctionVersion="2",
                             RevisionId=created["RevisionId"])
    assert moved["FunctionVersion"] == "2" and moved["RevisionId"] != created["RevisionId"]
    resp, body, _ = invoke(lam, name, Qualifier="live", tail=False)
    assert resp["ExecutedVersion"] == "2" and body["code"] == "two"

    # Weighted routing: a share of invocations goes to the additional version.
    lam.update_alias(FunctionName=name, Name="live", FunctionVersion="1",
                     RoutingConfig={"AdditionalVersionWeights": {"2": 0.5}})
    got = lam.get_alias(FunctionName=name, Name="live")
    assert got["RoutingConfig"] == {"AdditionalVersionWeights": {"2": 0.5}}
    ran = {invoke(lam, name, Qualifier="live", tail=False)[0]["ExecutedVersion"]
           for _ in range(40)}
    assert ran == {"1", "2"}
    with pytest.raises(ClientError) as e:
        lam.update_alias(FunctionName=name, Name="live",
                         RoutingConfig={"AdditionalVersionWeights": {"1": 0.5}})
    assert error_code(e) == "InvalidParameterValueException"  # the alias's own version
    with pytest.raises(ClientError) as e:
        lam.delete_function(FunctionName=name, Qualifier="2")
    assert error_code(e) == "ResourceConflictException"
    assert "live" in e.value.response["Error"]["Message"]
    lam.update_alias(FunctionName=name, Name="live", RoutingConfig={"AdditionalVersionWeights": {}})
    assert "RoutingConfig" not in lam.get_alias(FunctionName=name, Name="live")

    lam.create_alias(FunctionName=name, Name="dev", FunctionVersion="$LATEST")
    listed = lam.list_aliases(FunctionName=name)["Aliases"]
    assert [(a["Name"], a["FunctionVersion"]) for a in listed] == [("dev", "$LATEST"), ("live", "1")]
    only = lam.list_aliases(FunctionName=name, FunctionVersion="1")["Aliases"]
    assert [a["Name"] for a in only] == ["live"]
    assert invoke(lam, name, Qualifier="dev", tail=False)[0]["ExecutedVersion"] == "$LATEST"

    lam.delete_alias(FunctionName=name, Name="dev")
    lam.delete_alias(FunctionName=name, Name="dev")  # already gone: still 204, as in Lambda
    with pytest.raises(ClientError) as e:
        lam.get_alias(FunctionName=name, Name="dev")
    assert error_code(e) == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        lam.invoke(FunctionName=name, Qualifier="dev", Payload=b"{}")
    assert error_code(e) == "ResourceNotFoundException"


def test_version_logs_are_in_their_own_streams(lam, logs, functions):
    name = unique("vlog")
    functions.create(tagged("logged"), name=name, Publish=True)
    invoke(lam, name, Qualifier="1")
    invoke(lam, name)
    group = f"/aws/lambda/{name}"

    def streams():
        try:
            return [s["logStreamName"] for s in logs.describe_log_streams(logGroupName=group)["logStreams"]]
        except ClientError:
            return []

    names = wait_for(lambda: len(streams()) == 2 and streams(), what="two log streams")
    assert sorted(re.sub(r"^\d{4}/\d{2}/\d{2}/(\[[^\]]+\]).*$", r"\1", n) for n in names) \
        == ["[$LATEST]", "[1]"]


def test_versions_and_aliases_with_the_aws_cli(cli, functions, tmp_path):
    name = unique("vcli")
    functions.create(tagged("first"), name=name)
    published = cli.json("lambda", "publish-version", "--function-name", name,
                         "--description", "from the CLI")
    assert published["Version"] == "1"
    (tmp_path / "second.zip").write_bytes(tagged("second"))
    cli.json("lambda", "update-function-code", "--function-name", name,
             "--zip-file", f"fileb://{tmp_path / 'second.zip'}")
    versions = cli.json("lambda", "list-versions-by-function", "--function-name", name)
    assert [v["Version"] for v in versions["Versions"]] == ["$LATEST", "1"]
    alias = cli.json("lambda", "create-alias", "--function-name", name, "--name", "prod",
                     "--function-version", "1")
    assert alias["AliasArn"] == arn(name, "prod")
    out = tmp_path / "out.json"
    meta = cli.json("lambda", "invoke", "--function-name", name, "--qualifier", "prod",
                    *cli.payload_args("{}"), str(out))
    assert meta["ExecutedVersion"] == "1"
    assert json.loads(out.read_text())["code"] == "first"
    meta = cli.json("lambda", "invoke", "--function-name", name, *cli.payload_args("{}"), str(out))
    assert meta["ExecutedVersion"] == "$LATEST" and json.loads(out.read_text())["code"] == "second"
    cli.json("lambda", "update-alias", "--function-name", name, "--name", "prod",
             "--description", "still 1")
    got = cli.json("lambda", "get-alias", "--function-name", name, "--name", "prod")
    assert got["Description"] == "still 1" and got["FunctionVersion"] == "1"
    aliases = cli.json("lambda", "list-aliases", "--function-name", name)["Aliases"]
    assert [a["Name"] for a in aliases] == ["prod"]
    cfg = cli.json("lambda", "get-function-configuration", "--function-name", name,
                   "--qualifier", "1")
    assert cfg["Version"] == "1"
    cli.run("lambda", "delete-alias", "--function-name", name, "--name", "prod")
    cli.run("lambda", "delete-function", "--function-name", name, "--qualifier", "1")
    p = cli.run("lambda", "get-function", "--function-name", name, "--qualifier", "1", check=False)
    assert p.returncode != 0 and "ResourceNotFoundException" in p.stderr
