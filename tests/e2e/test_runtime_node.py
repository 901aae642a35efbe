"""Node.js functions, on the node installed on the host."""

import re
import shutil
import subprocess

import pytest

from conftest import invoke, make_zip, report, unique


def _node_runtime():
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        return None
    out = subprocess.run([node, "--version"], capture_output=True, text=True).stdout
    m = re.match(r"v(\d+)\.", out.strip())
    return f"nodejs{m.group(1)}.x" if m else None


NODE_RUNTIME = _node_runtime()
# scripts/setup-test-deps.sh installs node where it is missing.
assert NODE_RUNTIME is not None, "node is required by the e2e suite (run scripts/setup-test-deps.sh)"

INDEX_JS = """
console.log("node module loaded");
let count = 0;

exports.asyncHandler = async (event, context) => {
  count += 1;
  console.log("async handler got", JSON.stringify(event));
  await new Promise((r) => setTimeout(r, 10));
  return {
    kind: "async", count, echo: event,
    requestId: context.awsRequestId,
    functionName: context.functionName,
    memory: context.memoryLimitInMB,
    arn: context.invokedFunctionArn,
    remaining: context.getRemainingTimeInMillis(),
    logGroup: context.logGroupName,
    execEnv: process.env.AWS_EXECUTION_ENV,
  };
};

exports.callbackHandler = (event, context, callback) => {
  console.log("callback handler");
  setTimeout(() => callback(null, { kind: "callback", echo: event }), 10);
};

exports.callbackError = (event, context, callback) => {
  callback(new TypeError("bad callback"));
};

exports.thrower = async (event) => {
  console.error("about to throw");
  throw new Error("boom " + event.n);
};

exports.rejectString = async () => {
  return Promise.reject("just a string");
};
"""


@pytest.fixture(scope="module")
def node_zip():
    return make_zip({"index.js": INDEX_JS})


def test_async_handler(lam, functions, node_zip):
    name = unique("node-async")
    functions.create(node_zip, name=name, runtime=NODE_RUNTIME, handler="index.asyncHandler",
                     Timeout=5)
    resp, body, log = invoke(lam, name, {"hello": "world"})
    assert "FunctionError" not in resp, body
    assert body["kind"] == "async" and body["echo"] == {"hello": "world"}
    assert body["count"] == 1
    assert body["requestId"] == resp["ResponseMetadata"]["RequestId"]
    assert body["functionName"] == name
    assert str(body["memory"]) == "128"
    assert body["arn"].endswith(f":function:{name}")
    assert 3000 < body["remaining"] <= 5000
    assert body["logGroup"] == f"/aws/lambda/{name}"
    assert body["execEnv"] == f"AWS_Lambda_{NODE_RUNTIME}"
    assert "node module loaded" in log
    assert 'async handler got {"hello":"world"}' in log
    r = report(log)
    assert r["id"] == body["requestId"] and r["init"] is not None
    # warm
    resp, body, log = invoke(lam, name, {})
    assert body["count"] == 2
    assert report(log)["init"] is None


def test_callback_handler(lam, functions, node_zip):
    name = unique("node-cb")
    functions.create(node_zip, name=name, runtime=NODE_RUNTIME, handler="index.callbackHandler")
    resp, body, log = invoke(lam, name, {"x": 1})
    assert "FunctionError" not in resp, body
    assert body == {"kind": "callback", "echo": {"x": 1}}
    assert "callback handler" in log


def test_callback_error(lam, functions, node_zip):
    name = unique("node-cberr")
    functions.create(node_zip, name=name, runtime=NODE_RUNTIME, handler="index.callbackError")
    resp, body, _ = invoke(lam, name, {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "TypeError"
    assert body["errorMessage"] == "bad callback"


def test_thrown_error(lam, functions, node_zip):
    name = unique("node-throw")
    functions.create(node_zip, name=name, runtime=NODE_RUNTIME, handler="index.thrower")
    resp, body, log = invoke(lam, name, {"n": 7})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Error"
    assert body["errorMessage"] == "boom 7"
    assert isinstance(body["trace"], list) and body["trace"]
    assert body["trace"][0] == "Error: boom 7"
    assert any("index.js" in line for line in body["trace"])
    assert "about to throw" in log
    assert "boom 7" in log


def test_rejected_string(lam, functions, node_zip):
    name = unique("node-reject")
    functions.create(node_zip, name=name, runtime=NODE_RUNTIME, handler="index.rejectString")
    resp, body, _ = invoke(lam, name, {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorMessage"] == "just a string"


def test_es_module_handler(lam, functions):
    name = unique("node-esm")
    z = make_zip({"index.mjs": "export const handler = async (event) => ({esm: true, n: event.n});\n"})
    functions.create(z, name=name, runtime=NODE_RUNTIME, handler="index.handler")
    resp, body, _ = invoke(lam, name, {"n": 3})
    assert "FunctionError" not in resp, body
    assert body == {"esm": True, "n": 3}


def test_missing_module_and_handler(lam, functions, node_zip):
    name = unique("node-nomod")
    functions.create(node_zip, name=name, runtime=NODE_RUNTIME, handler="missing.handler")
    resp, body, _ = invoke(lam, name, {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ImportModuleError"
    name = unique("node-nohandler")
    functions.create(node_zip, name=name, runtime=NODE_RUNTIME, handler="index.notThere")
    resp, body, _ = invoke(lam, name, {})
    assert resp["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.HandlerNotFound"


def test_handler_in_subdirectory(lam, functions):
    name = unique("node-subdir")
    z = make_zip({"src/handlers/app.js": "exports.main = async () => 'from src/handlers/app';\n"})
    functions.create(z, name=name, runtime=NODE_RUNTIME, handler="src/handlers/app.main")
    resp, body, _ = invoke(lam, name, {})
    assert "FunctionError" not in resp, body
    assert body == "from src/handlers/app"
