"""Malformed and odd requests get the protocol's client errors, never a 500 or a
dropped connection, and the server keeps serving."""

import json

import pytest

from test_auth import raw_post, signed_headers

PREFIX = "AmazonEC2ContainerServiceV20141113."


@pytest.mark.parametrize("target,body,expected", [
    (PREFIX + "ListClusters", b"{not json", {"SerializationException"}),
    (PREFIX + "CreateCluster", b'{"clusterName": 5}',
     {"SerializationException", "InvalidParameterException", "ClientException"}),
    (PREFIX + "DescribeClusters", b'{"clusters": "demo"}',
     {"SerializationException", "InvalidParameterException", "ClientException"}),
    (PREFIX + "RunTask", b"{}",
     {"SerializationException", "InvalidParameterException", "ClientException"}),
    (PREFIX + "NoSuchOperation", b"{}", {"UnknownOperationException", "InvalidAction"}),
    (PREFIX + "ListClusters", b"[]", {"SerializationException"}),
    (PREFIX + "CreateCluster", json.dumps({"clusterName": "x" * 300}).encode(),
     {"InvalidParameterException", "ClientException"}),
    (PREFIX + "RegisterTaskDefinition",
     json.dumps({"family": "f", "containerDefinitions": [
         {"name": "c", "image": "busybox", "memory": -5}]}).encode(),
     {"ClientException", "InvalidParameterException"}),
])
def test_malformed_requests_are_client_errors(wharf, target, body, expected):
    url = wharf.endpoint + "/"
    status, headers, parsed = raw_post(url, signed_headers(url, body, target=target), body)
    assert 400 <= status < 500, (status, parsed)
    assert parsed.get("__type", "").split("#")[-1] in expected, parsed
    assert headers.get("x-amzn-RequestId")
    # Still alive.
    assert wharf.client().list_clusters()["clusterArns"] == []
