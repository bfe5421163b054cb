"""SigV4 authentication at the wire level."""

import datetime
import json
import urllib.request
import urllib.error

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from conftest import ROOT_KEY_ID, ROOT_SECRET

TARGET = "AmazonEC2ContainerServiceV20141113.ListClusters"
CONTENT_TYPE = "application/x-amz-json-1.1"


def raw_post(url: str, headers: dict, body: bytes = b"{}"):
    """POSTs and returns (status, headers, parsed JSON body) also for 4xx/5xx."""
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, res.headers, json.loads(res.read() or b"{}")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = {"<raw>": raw.decode(errors="replace")}
        return e.code, e.headers, parsed


def signed_headers(url: str, body: bytes, when: datetime.datetime | None = None,
                   key=ROOT_KEY_ID, secret=ROOT_SECRET, region="us-east-1",
                   target=TARGET) -> dict:
    request = AWSRequest(method="POST", url=url, data=body,
                         headers={"X-Amz-Target": target, "Content-Type": CONTENT_TYPE})
    signer = botocore.auth.SigV4Auth(Credentials(key, secret), "ecs", region)
    if when is None:
        signer.add_auth(request)
    else:
        original = botocore.auth.get_current_datetime
        botocore.auth.get_current_datetime = lambda *a, **k: when
        try:
            signer.add_auth(request)
        finally:
            botocore.auth.get_current_datetime = original
    return dict(request.headers.items())


def test_wrong_secret(wharf):
    client = wharf.client(secret="not-the-secret")
    with pytest.raises(ClientError) as e:
        client.list_clusters()
    assert e.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 403)


def test_unknown_access_key(wharf):
    client = wharf.client(key="FOOBARKEY", secret=ROOT_SECRET)
    with pytest.raises(ClientError) as e:
        client.list_clusters()
    assert e.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_unsigned_request(wharf):
    status, headers, body = raw_post(wharf.endpoint + "/",
                                     {"X-Amz-Target": TARGET, "Content-Type": CONTENT_TYPE})
    assert 400 <= status < 500, (status, body)
    assert body.get("__type", "").split("#")[-1] == "MissingAuthenticationTokenException", body
    assert headers.get("x-amzn-RequestId")


def test_signed_request_works_raw(wharf):
    url = wharf.endpoint + "/"
    status, headers, body = raw_post(url, signed_headers(url, b"{}"), b"{}")
    assert status == 200, body
    assert body.get("clusterArns") == []
    assert headers.get("x-amzn-RequestId")
    assert headers.get("Content-Type", "").startswith(CONTENT_TYPE)


def test_absent_members_are_omitted(wharf):
    url = wharf.endpoint + "/"
    status, _, body = raw_post(url, signed_headers(url, b"{}"), b"{}")
    assert status == 200, body
    assert body == {"clusterArns": []}


def test_expired_signature(wharf):
    url = wharf.endpoint + "/"
    past = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) \
        - datetime.timedelta(minutes=20)
    headers = signed_headers(url, b"{}", when=past)
    assert headers["X-Amz-Date"] == past.strftime("%Y%m%dT%H%M%SZ")
    status, resp_headers, body = raw_post(url, headers, b"{}")
    assert 400 <= status < 500, (status, body)
    assert body.get("__type", "").split("#")[-1] == "InvalidSignatureException", body
    message = body.get("message") or body.get("Message") or ""
    assert "Signature expired" in message, body
    assert resp_headers.get("x-amzn-RequestId")

    # As far in the future is rejected too.
    future = past + datetime.timedelta(minutes=40)
    status, _, body = raw_post(url, signed_headers(url, b"{}", when=future), b"{}")
    assert 400 <= status < 500, (status, body)
    assert body.get("__type", "").split("#")[-1] == "InvalidSignatureException", body

    # 10 minutes in the past is within the 15-minute skew and accepted.
    recent = past + datetime.timedelta(minutes=10)
    status, _, body = raw_post(url, signed_headers(url, b"{}", when=recent), b"{}")
    assert status == 200, body


def test_tampered_body(wharf):
    url = wharf.endpoint + "/"
    headers = signed_headers(url, b"{}")
    status, _, body = raw_post(url, headers, b'{"maxResults": 5}')
    assert 400 <= status < 500, (status, body)
    assert body.get("__type", "").split("#")[-1] == "InvalidSignatureException", body


def test_request_id_on_every_response(wharf):
    seen = []
    good = wharf.client()
    bad = wharf.client(secret="wrong")
    for c in (good, bad):
        c.meta.events.register("after-call.ecs", lambda http_response, **kw: seen.append(
            http_response.headers.get("x-amzn-RequestId")))
    good.list_clusters()
    good.create_cluster(clusterName="rid")
    with pytest.raises(ClientError):
        good.describe_task_definition(taskDefinition="nope:1")
    with pytest.raises(ClientError):
        bad.list_clusters()
    assert len(seen) == 4
    assert all(seen), seen
    assert len(set(seen)) == 4, seen
