#!/usr/bin/env python3
"""Generate tests/data/sigv4.json: SigV4 test vectors for nimbus-auth.

Usage:
    python3 gen_vectors.py <aws-c-auth git dir> [--commit REV] [--out PATH]

<aws-c-auth git dir> is a (possibly bare) git repository of awslabs/aws-c-auth;
files are read with `git show REV:tests/aws-signing-test-suite/v4/...`, so no
work tree is needed.  The extra vectors at the end of the file are computed by
the installed botocore (needed only for that part).  See README.md beside this
file for what is taken from where and which suite cases are skipped and why.
"""
import argparse
import hashlib
import hmac
import json
import subprocess
import sys
from urllib.parse import quote, unquote_to_bytes

SUITE = "tests/aws-signing-test-suite/v4"

# Suite cases/variants that cannot be expressed with the nimbus-auth API.
SKIP = {
    ("post-sts-header-after", "query"): (
        "X-Amz-Security-Token was appended to the presigned URL after signing "
        "(omit_session_token), so it is in the received query but not in the "
        "canonical query; the API excludes only X-Amz-Signature"
    ),
}


# ---------------------------------------------------------------- helpers

def git_show(repo, rev, path):
    return subprocess.run(
        ["git", "-C", repo, "show", f"{rev}:{path}"],
        check=True, capture_output=True,
    ).stdout


def list_cases(repo, rev):
    out = subprocess.run(
        ["git", "-C", repo, "ls-tree", "-d", "--name-only", f"{rev}:{SUITE}"],
        check=True, capture_output=True, text=True,
    ).stdout
    return sorted(line for line in out.splitlines() if line)


def parse_http(raw):
    """Parse a suite request file -> (method, target, [(name, value)], body bytes).

    The request line's target may itself contain spaces (get-space-*), so the
    method is the first word and the HTTP version the last.  Folded header
    lines (obs-fold, get-header-value-multiline) are unfolded the way RFC 7230
    3.2.4 allows: the line break is replaced by one SP and the continuation's
    own leading whitespace is kept, so the value still needs Trimall.
    """
    head, sep, body = raw.partition(b"\n\n")
    lines = head.decode("utf-8").split("\n")
    first = lines[0].split(" ")
    method, target = first[0], " ".join(first[1:-1])
    headers = []
    for line in lines[1:]:
        if line == "":
            continue
        if line[0] in " \t":
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line)
            continue
        name, _, value = line.partition(":")
        headers.append((name, value))
    return method, target, headers, body


def split_query(query):
    pairs = []
    if query:
        for part in query.split("&"):
            k, _, v = part.partition("=")
            pairs.append((k, v))
    return pairs


def qparam(query, key):
    for k, v in split_query(query):
        if k == key:
            return unquote_to_bytes(v).decode("utf-8")
    raise KeyError(key)


def without_signature(query):
    return "&".join(p for p in query.split("&") if not p.startswith("X-Amz-Signature="))


def wire_encode_path(path):
    """Percent-encode bytes that cannot appear raw in a request-target."""
    return quote(path, safe="/-._~!$&'()*+,;=:@%")


def sts_of(amz_date, scope, canonical):
    return "\n".join([
        "AWS4-HMAC-SHA256", amz_date, scope,
        hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
    ])


def hmac256(key, msg):
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def sign(secret, date, region, service, sts):
    k = hmac256(("AWS4" + secret).encode("utf-8"), date)
    k = hmac256(k, region)
    k = hmac256(k, service)
    k = hmac256(k, "aws4_request")
    return hmac.new(k, sts.encode("utf-8"), hashlib.sha256).hexdigest()


# Independent reference canonicaliser, used only to check that the recorded
# inputs (after the adaptations described in README.md) really produce the
# recorded expected canonical request under the rules the API documents.
UNRESERVED = "-_.~"


def ref_normalize(path):
    out = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    res = "/" + "/".join(out)
    if path.endswith("/") and res != "/":
        res += "/"
    return res


def ref_canonical(case):
    path = case["path"]
    if case["path_mode"] == "Normalized":
        cpath = quote(ref_normalize(path), safe="/" + UNRESERVED)
    else:
        cpath = quote(unquote_to_bytes(path), safe="/" + UNRESERVED)
    pairs = []
    for k, v in split_query(case["query"]):
        if k == "X-Amz-Signature":
            continue
        pairs.append((quote(unquote_to_bytes(k), safe=UNRESERVED),
                      quote(unquote_to_bytes(v), safe=UNRESERVED)))
    cquery = "&".join(f"{k}={v}" for k, v in sorted(pairs))
    lines = []
    for name in case["signed_headers"]:
        vals = [" ".join(v.split()) for n, v in case["headers"] if n.lower() == name]
        lines.append(f"{name}:{','.join(vals)}\n")
    return "\n".join([
        case["method"], cpath, cquery, "".join(lines),
        ";".join(case["signed_headers"]), case["payload_hash"],
    ])


def check(case):
    """Cross-check a case against itself; raise on any inconsistency."""
    name = case["name"]
    date = case["scope"].split("/")[0]
    assert case["scope"] == f"{date}/{case['region']}/{case['service']}/aws4_request", name
    assert case["expected_canonical_request"].rsplit("\n", 1)[1] == case["payload_hash"], name
    assert ";".join(case["signed_headers"]) == case["expected_canonical_request"].split("\n")[-2], name
    assert sts_of(case["amz_date"], case["scope"], case["expected_canonical_request"]) \
        == case["expected_string_to_sign"], name
    assert sign(case["secret"], date, case["region"], case["service"],
                case["expected_string_to_sign"]) == case["expected_signature"], name
    ref = ref_canonical(case)
    if ref != case["expected_canonical_request"]:
        raise AssertionError(f"{name}: reference canonicaliser disagrees:\n{ref!r}\n"
                             f"{case['expected_canonical_request']!r}")
    if "received_query" in case:
        assert without_signature(case["received_query"]) == case["query"], name
        assert qparam(case["received_query"], "X-Amz-Signature") == case["expected_signature"], name


# ---------------------------------------------------------------- the suite

def suite_cases(repo, rev, skipped):
    cases = []
    for cname in list_cases(repo, rev):
        def read(f):
            return git_show(repo, rev, f"{SUITE}/{cname}/{f}")
        ctx = json.loads(read("context.json"))
        _, _, _, body = parse_http(read("request.txt"))
        mode = "Normalized" if ctx.get("normalize", True) else "S3"
        for variant in ("header", "query"):
            if (cname, variant) in SKIP:
                skipped.append((f"{cname}/{variant}", SKIP[(cname, variant)]))
                continue
            method, target, headers, _ = parse_http(read(f"{variant}-signed-request.txt"))
            path, _, query = target.partition("?")
            notes = []
            if mode == "S3" and wire_encode_path(path) != path:
                notes.append(f"path {path!r} in the suite is not a valid request-target; "
                             "recorded as sent on the wire (S3 mode encodes the decoded path once, "
                             "so the expected result is the same)")
                path = wire_encode_path(path)
            elif wire_encode_path(path) != path:
                notes.append("path kept byte-for-byte as the suite has it (raw space/UTF-8): "
                             "Normalized mode must add one encoding pass to the path as received, "
                             "not decode it first")
            if any(ord(c) > 0x7e or c == " " for c in query):
                wire = "&".join(
                    "=".join(quote(x, safe="-._~%") for x in p.partition("=")[::2])
                    if "=" in p else quote(p, safe="-._~%")
                    for p in query.split("&"))
                notes.append("the suite's query has raw UTF-8, which is not a valid "
                             "request-target; recorded percent-encoded as a client sends it "
                             "(the expected result is the same)")
                query = wire
            amz_date = None
            content_sha = None
            for n, v in headers:
                if n.lower() == "x-amz-content-sha256":
                    content_sha = v.strip()
            if variant == "header":
                auth = dict(h for h in headers if h[0].lower() == "authorization")["Authorization"]
                fields = dict(part.strip().split("=", 1)
                              for part in auth.split(" ", 1)[1].split(","))
                signed = fields["SignedHeaders"].split(";")
                scope = fields["Credential"].split("/", 1)[1]
                amz_date = [v for n, v in headers if n.lower() == "x-amz-date"][0]
                sig_in_request = fields["Signature"]
                received_query = None
            else:
                signed = qparam(query, "X-Amz-SignedHeaders").split(";")
                scope = qparam(query, "X-Amz-Credential").split("/", 1)[1]
                amz_date = qparam(query, "X-Amz-Date")
                sig_in_request = qparam(query, "X-Amz-Signature")
                received_query = query
                query = without_signature(query)
            payload_hash = hashlib.sha256(body).hexdigest()
            if content_sha is not None:
                assert content_sha == payload_hash, cname
                payload_hash = content_sha
            expected_sig = read(f"{variant}-signature.txt").decode().strip()
            assert expected_sig == sig_in_request, (cname, variant)
            case = {
                "name": f"{cname}/{variant}",
                "source": f"aws-c-auth {SUITE}/{cname} ({variant}-*)",
                "method": method,
                "path": path,
                "query": query,
            }
            if received_query is not None:
                case["received_query"] = received_query
            case.update({
                "headers": [[n, v] for n, v in headers],
                "payload_hash": payload_hash,
                "path_mode": mode,
                "signed_headers": signed,
                "amz_date": amz_date,
                "scope": scope,
                "secret": ctx["credentials"]["secret_access_key"],
                "region": ctx["region"],
                "service": ctx["service"],
                "expected_canonical_request": read(f"{variant}-canonical-request.txt").decode(),
                "expected_string_to_sign": read(f"{variant}-string-to-sign.txt").decode(),
                "expected_signature": expected_sig,
            })
            if notes:
                case["note"] = "; ".join(notes)
            cases.append(case)
    return cases


# ---------------------------------------------------------------- botocore

def botocore_cases():
    import datetime
    import botocore
    import botocore.auth
    import botocore.awsrequest
    import botocore.serialize
    import botocore.session
    from botocore.credentials import Credentials

    endpoint = "https://lambda.us-east-1.amazonaws.com"
    host = "lambda.us-east-1.amazonaws.com"
    region, service = "us-east-1", "lambda"
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    token = "IQoJb3JpZ2luX2VjEXAMPLE/nimbus+test=="
    botocore.auth.get_current_datetime = lambda *a, **k: datetime.datetime(2025, 1, 15, 8, 30, 0)
    model = botocore.session.get_session().get_service_model("lambda")
    serializer = botocore.serialize.create_serializer("rest-json", include_validation=False)
    ua = f"Botocore/{botocore.__version__} nimbus-test-vectors"

    def capturing(base):
        cap = {}

        class Signer(base):
            def canonical_request(self, r):
                cap["cr"] = super().canonical_request(r)
                return cap["cr"]

            def string_to_sign(self, r, c):
                cap["sts"] = super().string_to_sign(r, c)
                return cap["sts"]

            def signature(self, sts, r):
                cap["sig"] = super().signature(sts, r)
                return cap["sig"]
        return Signer, cap

    specs = [
        ("botocore/lambda-get-function-configuration-arn-qualifier",
         "GetFunctionConfiguration",
         {"FunctionName": "arn:aws:lambda:us-east-1:123456789012:function:my-function",
          "Qualifier": "$LATEST"}, None, botocore.auth.SigV4Auth),
        ("botocore/lambda-invoke-post-json-session-token",
         "Invoke",
         {"FunctionName": "my-function", "InvocationType": "RequestResponse",
          "Payload": b'{"hello": "world", "n": 1}'}, token, botocore.auth.SigV4Auth),
        ("botocore/lambda-get-function-space-unicode",
         "GetFunction",
         {"FunctionName": "my function \u00fc\u20ac"}, None, botocore.auth.SigV4Auth),
        ("botocore/lambda-presigned-get-function-configuration-arn-qualifier",
         "GetFunctionConfiguration",
         {"FunctionName": "arn:aws:lambda:us-east-1:123456789012:function:my-function",
          "Qualifier": "$LATEST"}, token, botocore.auth.SigV4QueryAuth),
    ]
    cases = []
    for name, op, params, tok, base in specs:
        rd = serializer.serialize_to_request(params, model.operation_model(op))
        rd["headers"]["User-Agent"] = ua
        botocore.awsrequest.prepare_request_dict(rd, endpoint)
        req = botocore.awsrequest.create_request_object(rd)
        Signer, cap = capturing(base)
        Signer(Credentials("AKIDEXAMPLE", secret, tok), service, region).add_auth(req)
        prepared = req.prepare()
        target = prepared.url[len(endpoint):]
        path, _, query = target.partition("?")
        # On the wire the HTTP client adds Host; everything else is botocore's.
        headers = [["Host", host]] + [[k, v] for k, v in prepared.headers.items()]
        cr = cap["cr"]
        lines = cr.split("\n")
        case = {
            "name": name,
            "source": f"botocore {botocore.__version__} "
                      f"{base.__name__} on lambda {op} "
                      f"{json.dumps(params, default=lambda b: b.decode(), ensure_ascii=False)}",
            "method": prepared.method,
            "path": path,
        }
        if base is botocore.auth.SigV4QueryAuth:
            case["query"] = without_signature(query)
            case["received_query"] = query
            amz_date = qparam(query, "X-Amz-Date")
        else:
            case["query"] = query
            amz_date = dict((k.lower(), v) for k, v in headers)["x-amz-date"]
        case.update({
            "headers": headers,
            "payload_hash": lines[-1],
            "path_mode": "Normalized",
            "signed_headers": lines[-2].split(";"),
            "amz_date": amz_date,
            "scope": cap["sts"].split("\n")[2],
            "secret": secret,
            "region": region,
            "service": service,
            "expected_canonical_request": cr,
            "expected_string_to_sign": cap["sts"],
            "expected_signature": cap["sig"],
        })
        body = prepared.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        assert hashlib.sha256(body).hexdigest() == case["payload_hash"], name
        cases.append(case)
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("repo", help="git dir of awslabs/aws-c-auth")
    ap.add_argument("--commit", default="HEAD")
    ap.add_argument("--out", default=None, help="output file (default: stdout)")
    args = ap.parse_args()

    rev = subprocess.run(["git", "-C", args.repo, "rev-parse", args.commit],
                         check=True, capture_output=True, text=True).stdout.strip()
    skipped = []
    cases = suite_cases(args.repo, rev, skipped) + botocore_cases()
    for c in cases:
        check(c)
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names))
    doc = {
        "about": "SigV4 vectors for nimbus-auth; see README.md beside this file. "
                 "Generated by gen_vectors.py; do not edit by hand.",
        "suite_commit": rev,
        "skipped": [{"name": n, "why": w} for n, w in skipped],
        "cases": cases,
    }
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    print(f"{len(cases)} cases, {len(skipped)} skipped", file=sys.stderr)


if __name__ == "__main__":
    main()
