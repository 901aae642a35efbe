"""IAM and STS through boto3 and the AWS CLI: users and access keys, roles
with trust policies, managed (AWS and customer) and inline policies,
GetCallerIdentity and AssumeRole, and that it all survives a restart."""

import json
import sqlite3

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from conftest import (PY_RUNTIME, REGION, ROLE, error_code, invoke, py_zip, unique,
                      wait_for)

LAMBDA_TRUST = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
BASIC = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"


def as_key(server, service, key_id, secret, token=None):
    return boto3.client(service, endpoint_url=server.url, region_name=REGION,
                        aws_access_key_id=key_id, aws_secret_access_key=secret,
                        aws_session_token=token, config=Config(retries={"total_max_attempts": 1}))


@pytest.fixture
def iam(server):
    return server.client("iam")


@pytest.fixture
def sts(server):
    return server.client("sts")


def test_users_and_access_keys(server, iam):
    name = unique("user")
    created = iam.create_user(UserName=name)["User"]
    assert created["Arn"] == f"arn:aws:iam::000000000000:user/{name}"
    assert created["UserId"].startswith("AIDA")
    with pytest.raises(ClientError) as e:
        iam.create_user(UserName=name)
    assert error_code(e) == "EntityAlreadyExists"
    assert name in [u["UserName"] for u in iam.list_users()["Users"]]

    key = iam.create_access_key(UserName=name)["AccessKey"]
    assert key["AccessKeyId"].startswith("AKIA") and len(key["SecretAccessKey"]) == 40
    me = as_key(server, "sts", key["AccessKeyId"], key["SecretAccessKey"]).get_caller_identity()
    assert me["Arn"] == created["Arn"] and me["UserId"] == created["UserId"]
    assert me["Account"] == "000000000000"

    iam.create_access_key(UserName=name)
    with pytest.raises(ClientError) as e:
        iam.create_access_key(UserName=name)
    assert error_code(e) == "LimitExceeded"
    listed = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
    assert len(listed) == 2 and all(k["Status"] == "Active" for k in listed)

    iam.update_access_key(UserName=name, AccessKeyId=key["AccessKeyId"], Status="Inactive")
    with pytest.raises(ClientError) as e:
        as_key(server, "sts", key["AccessKeyId"], key["SecretAccessKey"]).get_caller_identity()
    assert error_code(e) in ("InvalidClientTokenId", "UnrecognizedClientException")

    with pytest.raises(ClientError) as e:
        iam.delete_user(UserName=name)
    assert error_code(e) == "DeleteConflict"
    for k in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]:
        iam.delete_access_key(UserName=name, AccessKeyId=k["AccessKeyId"])
    iam.delete_user(UserName=name)
    with pytest.raises(ClientError) as e:
        iam.get_user(UserName=name)
    assert error_code(e) == "NoSuchEntity"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_roles_with_trust_and_attached_and_inline_policies(iam):
    name = unique("role")
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST),
                           Description="for lambda")["Role"]
    assert role["Arn"] == f"arn:aws:iam::000000000000:role/{name}"
    got = iam.get_role(RoleName=name)["Role"]
    assert got["AssumeRolePolicyDocument"] == LAMBDA_TRUST, "the trust policy reads back as JSON"
    assert got["Description"] == "for lambda"

    iam.attach_role_policy(RoleName=name, PolicyArn=BASIC)
    attached = iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    assert attached == [{"PolicyName": "AWSLambdaBasicExecutionRole", "PolicyArn": BASIC}]
    inline = {"Version": "2012-10-17",
              "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::photos/*"}]}
    iam.put_role_policy(RoleName=name, PolicyName="read-photos", PolicyDocument=json.dumps(inline))
    assert iam.list_role_policies(RoleName=name)["PolicyNames"] == ["read-photos"]
    assert iam.get_role_policy(RoleName=name, PolicyName="read-photos")["PolicyDocument"] == inline

    with pytest.raises(ClientError) as e:
        iam.delete_role(RoleName=name)
    assert error_code(e) == "DeleteConflict"
    iam.detach_role_policy(RoleName=name, PolicyArn=BASIC)
    iam.delete_role_policy(RoleName=name, PolicyName="read-photos")
    iam.delete_role(RoleName=name)
    with pytest.raises(ClientError) as e:
        iam.get_role(RoleName=name)
    assert error_code(e) == "NoSuchEntity"


def test_aws_managed_policies_a_lambda_user_expects(iam):
    for arn in [BASIC, "arn:aws:iam::aws:policy/AWSLambdaExecute",
                "arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess", "arn:aws:iam::aws:policy/AdministratorAccess"]:
        p = iam.get_policy(PolicyArn=arn)["Policy"]
        assert p["Arn"] == arn and p["DefaultVersionId"] == "v1"
    doc = iam.get_policy_version(PolicyArn=BASIC, VersionId="v1")["PolicyVersion"]["Document"]
    assert doc["Statement"][0]["Action"] == ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
    aws = [p["PolicyName"] for p in iam.list_policies(Scope="AWS")["Policies"]]
    assert "AWSLambdaBasicExecutionRole" in aws and "AmazonS3ReadOnlyAccess" in aws
    with pytest.raises(ClientError) as e:
        iam.delete_policy(PolicyArn=BASIC)
    assert error_code(e) == "InvalidInput"


def test_customer_managed_policy_versions(iam):
    name = unique("pol")
    doc = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"}]}
    p = iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(doc), Description="invoke")["Policy"]
    arn = p["Arn"]
    assert arn == f"arn:aws:iam::000000000000:policy/{name}"
    with pytest.raises(ClientError) as e:
        iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(doc))
    assert error_code(e) == "EntityAlreadyExists"
    doc2 = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "lambda:*", "Resource": "*"}]}
    v2 = iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(doc2), SetAsDefault=True)["PolicyVersion"]
    assert v2["VersionId"] == "v2" and v2["IsDefaultVersion"] is True
    assert iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"] == "v2"
    assert iam.get_policy_version(PolicyArn=arn, VersionId="v1")["PolicyVersion"]["Document"] == doc
    for _ in range(3):
        iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(doc))
    with pytest.raises(ClientError) as e:
        iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(doc))
    assert error_code(e) == "LimitExceeded"
    versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
    assert len(versions) == 5 and [v["VersionId"] for v in versions if v["IsDefaultVersion"]] == ["v2"]
    with pytest.raises(ClientError) as e:
        iam.delete_policy_version(PolicyArn=arn, VersionId="v2")
    assert error_code(e) == "DeleteConflict"
    iam.delete_policy_version(PolicyArn=arn, VersionId="v1")
    with pytest.raises(ClientError) as e:
        iam.create_policy(PolicyName=unique("bad"), PolicyDocument="{not json")
    assert error_code(e) == "MalformedPolicyDocument"
    iam.delete_policy(PolicyArn=arn)
    with pytest.raises(ClientError) as e:
        iam.get_policy(PolicyArn=arn)
    assert error_code(e) == "NoSuchEntity"


def test_assume_role_issues_working_temporary_credentials(server, iam, sts):
    name = unique("assumable")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::000000000000:root"}, "Action": "sts:AssumeRole"}]}
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    out = sts.assume_role(RoleArn=role["Arn"], RoleSessionName="tester", DurationSeconds=900)
    creds = out["Credentials"]
    assert creds["AccessKeyId"].startswith("ASIA") and creds["SessionToken"]
    assert out["AssumedRoleUser"]["Arn"] == f"arn:aws:sts::000000000000:assumed-role/{name}/tester"
    me = as_key(server, "sts", creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"]).get_caller_identity()
    assert me["Arn"] == out["AssumedRoleUser"]["Arn"]
    with pytest.raises(ClientError) as e:
        as_key(server, "sts", creds["AccessKeyId"], creds["SecretAccessKey"]).get_caller_identity()
    assert error_code(e) in ("InvalidClientTokenId", "UnrecognizedClientException"), "the session token is required"

    lambda_only = unique("lambdaonly")
    r2 = iam.create_role(RoleName=lambda_only, AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST))["Role"]
    with pytest.raises(ClientError) as e:
        sts.assume_role(RoleArn=r2["Arn"], RoleSessionName="nope")
    assert error_code(e) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        sts.assume_role(RoleArn=role["Arn"], RoleSessionName="toolong", DurationSeconds=7200)
    assert error_code(e) == "ValidationError"


def test_iam_with_the_aws_cli(cli):
    name = unique("cliuser")
    out = cli.json("iam", "create-user", "--user-name", name)
    assert out["User"]["UserName"] == name
    out = cli.json("iam", "list-users")
    assert name in [u["UserName"] for u in out["Users"]]
    p = cli.run("iam", "get-user", "--user-name", name + "-missing", check=False)
    assert p.returncode != 0 and "NoSuchEntity" in p.stderr
    me = cli.json("sts", "get-caller-identity")
    assert me["Arn"] == "arn:aws:iam::000000000000:root"
    cli.run("iam", "delete-user", "--user-name", name)


def test_iam_state_survives_a_restart(own_server, tmp_path):
    srv = own_server(tmp_path / "data")
    iam = srv.client("iam")
    iam.create_user(UserName="keeper")
    key = iam.create_access_key(UserName="keeper")["AccessKey"]
    iam.create_role(RoleName="kept-role", AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST))
    iam.attach_role_policy(RoleName="kept-role", PolicyArn=BASIC)
    srv.stop()
    db = sqlite3.connect(tmp_path / "data" / "nimbus.db")
    stored = "".join(doc for (doc,) in db.execute("SELECT doc FROM documents"))
    db.close()
    assert key["AccessKeyId"] in stored
    assert key["SecretAccessKey"] not in stored, "secrets are sealed at rest"
    srv.start()
    iam = srv.client("iam")
    assert iam.get_user(UserName="keeper")["User"]["UserName"] == "keeper"
    assert iam.list_attached_role_policies(RoleName="kept-role")["AttachedPolicies"][0]["PolicyArn"] == BASIC
    me = as_key(srv, "sts", key["AccessKeyId"], key["SecretAccessKey"]).get_caller_identity()
    assert me["Arn"].endswith(":user/keeper"), "access keys keep working after a restart"


def test_create_function_requires_a_role_lambda_can_assume(server, iam, lam):
    code = {"ZipFile": py_zip("def lambda_handler(e, c):\n    return 1\n")}
    for role_arn in ["arn:aws:iam::000000000000:role/does-not-exist"]:
        with pytest.raises(ClientError) as e:
            lam.create_function(FunctionName=unique("norole"), Runtime=PY_RUNTIME, Role=role_arn,
                                Handler="lambda_function.lambda_handler", Code=code)
        assert error_code(e) == "InvalidParameterValueException"
        assert "cannot be assumed by Lambda" in e.value.response["Error"]["Message"]
    ec2_only = unique("ec2role")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    arn = iam.create_role(RoleName=ec2_only, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    with pytest.raises(ClientError) as e:
        lam.create_function(FunctionName=unique("ec2fn"), Runtime=PY_RUNTIME, Role=arn,
                            Handler="lambda_function.lambda_handler", Code=code)
    assert error_code(e) == "InvalidParameterValueException"


def test_functions_run_with_their_execution_role_session(functions, lam):
    source = """import os, boto3
def lambda_handler(event, context):
    me = boto3.client("sts").get_caller_identity()
    return {"arn": me["Arn"], "has_token": bool(os.environ.get("AWS_SESSION_TOKEN")),
            "key": os.environ["AWS_ACCESS_KEY_ID"][:4]}
"""
    name = functions.python(source, Timeout=30)["FunctionName"]
    _, body, _ = invoke(lam, name, {}, tail=False)
    role_name = ROLE.rsplit("/", 1)[1]
    assert body == {"arn": f"arn:aws:sts::000000000000:assumed-role/{role_name}/{name}",
                    "has_token": True, "key": "ASIA"}, body


def user_with(server, iam, managed=(), inline=None):
    """A new user with these policies, and boto3 clients acting as them."""
    name = unique("u")
    iam.create_user(UserName=name)
    for arn in managed:
        iam.attach_user_policy(UserName=name, PolicyArn=arn)
    if inline:
        iam.put_user_policy(UserName=name, PolicyName="inline", PolicyDocument=json.dumps(inline))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return lambda service: as_key(server, service, key["AccessKeyId"], key["SecretAccessKey"])


def test_policies_are_enforced_for_users(server, iam, functions, lam):
    target = functions.python("def lambda_handler(e, c):\n    return 'hi'\n")["FunctionName"]
    other = functions.python("def lambda_handler(e, c):\n    return 'other'\n")["FunctionName"]

    nobody = user_with(server, iam)
    with pytest.raises(ClientError) as e:
        nobody("lambda").list_functions()
    assert error_code(e) == "AccessDeniedException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "is not authorized to perform: lambda:ListFunctions" in e.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as e:
        nobody("iam").list_users()
    assert error_code(e) == "AccessDenied"
    assert nobody("sts").get_caller_identity()["Arn"].startswith("arn:aws:iam::000000000000:user/"), \
        "GetCallerIdentity needs no permission"

    reader = user_with(server, iam, managed=["arn:aws:iam::aws:policy/AWSLambda_ReadOnlyAccess"])
    assert target in [f["FunctionName"] for f in reader("lambda").list_functions()["Functions"]]
    with pytest.raises(ClientError) as e:
        reader("lambda").invoke(FunctionName=target)
    assert error_code(e) == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        reader("lambda").delete_function(FunctionName=target)
    assert error_code(e) == "AccessDeniedException"

    one_fn = user_with(server, iam, inline={"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "lambda:InvokeFunction",
         "Resource": f"arn:aws:lambda:{REGION}:000000000000:function:{target}"}]})
    assert one_fn("lambda").invoke(FunctionName=target)["Payload"].read() == b'"hi"'
    with pytest.raises(ClientError) as e:
        one_fn("lambda").invoke(FunctionName=other)
    assert error_code(e) == "AccessDeniedException"

    admin_but = user_with(server, iam, managed=["arn:aws:iam::aws:policy/AdministratorAccess"], inline={
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Action": "lambda:Invoke*", "Resource": "*"}]})
    assert admin_but("lambda").get_function(FunctionName=target)["Configuration"]["FunctionName"] == target
    with pytest.raises(ClientError) as e:
        admin_but("lambda").invoke(FunctionName=target)
    assert error_code(e) == "AccessDeniedException"
    assert "explicit deny" in e.value.response["Error"]["Message"]

    with pytest.raises(ClientError) as e:
        nobody("logs").describe_log_groups()
    assert error_code(e) == "AccessDeniedException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_a_role_without_log_permissions_gets_no_logs(server, iam, functions, lam, logs):
    role = unique("nologs")
    trust = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
    arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    quiet = functions.python("def lambda_handler(e, c):\n    print('unseen')\n    return 1\n", Role=arn)["FunctionName"]
    loud = functions.python("def lambda_handler(e, c):\n    print('seen')\n    return 1\n")["FunctionName"]
    _, _, tail = invoke(lam, quiet, {})
    assert "unseen" in tail, "the invoke response still carries its log tail"
    invoke(lam, loud, {})

    def loud_logged():
        try:
            return logs.describe_log_streams(logGroupName=f"/aws/lambda/{loud}")["logStreams"]
        except ClientError:
            return None
    wait_for(loud_logged, what="the logs of a role with AWSLambdaBasicExecutionRole")
    with pytest.raises(ClientError) as e:
        logs.describe_log_streams(logGroupName=f"/aws/lambda/{quiet}")
    assert error_code(e) == "ResourceNotFoundException", "no log group for a role without logs permissions"


def test_function_resource_policies(server, iam, functions, lam, cli):
    name = functions.python("def lambda_handler(e, c):\n    return 'granted'\n")["FunctionName"]
    with pytest.raises(ClientError) as e:
        lam.get_policy(FunctionName=name)
    assert error_code(e) == "ResourceNotFoundException"

    user = unique("guest")
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    guest = as_key(server, "lambda", key["AccessKeyId"], key["SecretAccessKey"])
    with pytest.raises(ClientError) as e:
        guest.invoke(FunctionName=name)
    assert error_code(e) == "AccessDeniedException", "no policy lets the guest invoke yet"

    user_arn = f"arn:aws:iam::000000000000:user/{user}"
    out = lam.add_permission(FunctionName=name, StatementId="let-guest", Action="lambda:InvokeFunction",
                             Principal=user_arn)
    statement = json.loads(out["Statement"])
    assert statement == {"Sid": "let-guest", "Effect": "Allow", "Principal": {"AWS": user_arn},
                         "Action": "lambda:InvokeFunction",
                         "Resource": f"arn:aws:lambda:{REGION}:000000000000:function:{name}"}
    assert guest.invoke(FunctionName=name)["Payload"].read() == b'"granted"', \
        "the function's resource policy allows what the guest's own policies do not"
    with pytest.raises(ClientError) as e:
        guest.get_function(FunctionName=name)
    assert error_code(e) == "AccessDeniedException", "only InvokeFunction was granted"
    with pytest.raises(ClientError) as e:
        lam.add_permission(FunctionName=name, StatementId="let-guest", Action="lambda:InvokeFunction",
                           Principal=user_arn)
    assert error_code(e) == "ResourceConflictException"

    cli.json("lambda", "add-permission", "--function-name", name, "--statement-id", "s3-invoke",
             "--action", "lambda:InvokeFunction", "--principal", "s3.amazonaws.com",
             "--source-arn", "arn:aws:s3:::photos", "--source-account", "000000000000")
    policy = json.loads(lam.get_policy(FunctionName=name)["Policy"])
    s3 = [s for s in policy["Statement"] if s["Sid"] == "s3-invoke"][0]
    assert s3["Principal"] == {"Service": "s3.amazonaws.com"}
    assert s3["Condition"] == {"ArnLike": {"AWS:SourceArn": "arn:aws:s3:::photos"},
                               "StringEquals": {"AWS:SourceAccount": "000000000000"}}

    lam.remove_permission(FunctionName=name, StatementId="let-guest")
    with pytest.raises(ClientError) as e:
        guest.invoke(FunctionName=name)
    assert error_code(e) == "AccessDeniedException"
    with pytest.raises(ClientError) as e:
        lam.remove_permission(FunctionName=name, StatementId="let-guest")
    assert error_code(e) == "ResourceNotFoundException"


def test_creating_a_function_needs_pass_role_on_its_role(server, iam, functions):
    code = {"ZipFile": py_zip("def lambda_handler(e, c):\n    return 1\n")}
    create_only = user_with(server, iam, inline={"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "lambda:CreateFunction", "Resource": "*"}]})
    with pytest.raises(ClientError) as e:
        create_only("lambda").create_function(FunctionName=unique("pr"), Runtime=PY_RUNTIME, Role=ROLE,
                                               Handler="lambda_function.lambda_handler", Code=code)
    assert error_code(e) == "AccessDeniedException"
    assert "iam:PassRole" in e.value.response["Error"]["Message"]

    full = user_with(server, iam, managed=["arn:aws:iam::aws:policy/AWSLambda_FullAccess"])
    name = unique("pr-ok")
    full("lambda").create_function(FunctionName=name, Runtime=PY_RUNTIME, Role=ROLE,
                                   Handler="lambda_function.lambda_handler", Code=code)
    functions.created.append(name)
    assert full("lambda").get_function(FunctionName=name)["Configuration"]["Role"] == ROLE
