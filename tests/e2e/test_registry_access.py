"""Registry access, public repositories, garbage collection and S3 storage through the
real clients: the AWS CLI's `ecr` and `ecr-public` commands, the docker CLI, skopeo
and boto3's S3 client, against `wharf up`."""

import base64
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest

from test_registry import IMAGE, docker, registry_address

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def docker_env():
    with tempfile.TemporaryDirectory() as config:
        yield {**os.environ, "DOCKER_CONFIG": config}


def login(wharf, registry, env, service="ecr"):
    password = wharf.aws_run(service, "get-login-password")
    assert password.returncode == 0, password.stderr
    out = docker("login", "--username", "AWS", "--password-stdin", registry,
                 env=env, stdin=password.stdout)
    assert "Login Succeeded" in out.stdout
    return password.stdout.strip()


def policy(effect, principal, actions):
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "s", "Effect": effect, "Principal": principal, "Action": actions}]})


def aws_error(wharf, *args):
    res = wharf.aws_run(*args)
    assert res.returncode != 0, f"aws {' '.join(args)} succeeded: {res.stdout}"
    return res.stderr


def test_repository_policies_with_the_aws_cli_and_docker(wharf, docker_env):
    registry = registry_address(wharf)
    wharf.aws("ecr", "create-repository", "--repository-name", "team/guarded")
    assert "RepositoryPolicyNotFoundException" in aws_error(
        wharf, "ecr", "get-repository-policy", "--repository-name", "team/guarded")
    assert "InvalidParameterException" in aws_error(
        wharf, "ecr", "set-repository-policy", "--repository-name", "team/guarded",
        "--policy-text", "{not json")
    login(wharf, registry, docker_env)
    tagged = f"{registry}/team/guarded:1"
    docker("tag", IMAGE, tagged)
    try:
        docker("push", tagged, env=docker_env)
        deny_pulls = policy("Deny", "*", ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"])
        out = wharf.aws("ecr", "set-repository-policy", "--repository-name", "team/guarded",
                        "--policy-text", deny_pulls)
        assert json.loads(out["policyText"]) == json.loads(deny_pulls)
        got = wharf.aws("ecr", "get-repository-policy", "--repository-name", "team/guarded")
        assert json.loads(got["policyText"]) == json.loads(deny_pulls)

        docker("rmi", tagged)
        refused = docker("pull", tagged, env=docker_env, check=False)
        assert refused.returncode != 0
        assert "denied" in (refused.stderr + refused.stdout).lower(), refused.stderr
        assert "AccessDeniedException" in aws_error(
            wharf, "ecr", "batch-get-image", "--repository-name", "team/guarded",
            "--image-ids", "imageTag=1")

        # A policy that would lock its author out of set-repository-policy needs --force.
        lockout = policy("Deny", {"AWS": "*"}, "ecr:*")
        assert "InvalidParameterException" in aws_error(
            wharf, "ecr", "set-repository-policy", "--repository-name", "team/guarded",
            "--policy-text", lockout)
        wharf.aws("ecr", "set-repository-policy", "--repository-name", "team/guarded",
                  "--policy-text", lockout, "--force")
        docker("tag", IMAGE, f"{registry}/team/guarded:2")
        try:
            pushed = docker("push", f"{registry}/team/guarded:2", env=docker_env, check=False)
            assert pushed.returncode != 0
            assert "denied" in (pushed.stderr + pushed.stdout).lower(), pushed.stderr
        finally:
            docker("rmi", f"{registry}/team/guarded:2", check=False)

        wharf.aws("ecr", "delete-repository-policy", "--repository-name", "team/guarded")
        docker("pull", tagged, env=docker_env)
    finally:
        docker("rmi", tagged, check=False)


def test_public_repositories_pull_anonymously_and_push_with_a_token(wharf, docker_env):
    registry = registry_address(wharf)
    repo = wharf.aws("ecr-public", "create-repository", "--repository-name", "pub/busybox",
                     "--catalog-data", json.dumps({"description": "busybox for everyone"}))["repository"]
    assert repo["repositoryUri"] == f"{registry}/pub/busybox"
    assert repo["repositoryArn"].startswith("arn:aws:ecr-public::")
    # One namespace for public and private repositories.
    assert "RepositoryAlreadyExistsException" in aws_error(
        wharf, "ecr", "create-repository", "--repository-name", "pub/busybox")
    wharf.aws("ecr", "create-repository", "--repository-name", "priv/busybox")

    tagged = f"{registry}/pub/busybox:1"
    private = f"{registry}/priv/busybox:1"
    docker("tag", IMAGE, tagged)
    docker("tag", IMAGE, private)
    try:
        # Anonymous pushes are refused, public or not.
        refused = docker("push", tagged, env=docker_env, check=False)
        assert refused.returncode != 0
        login(wharf, registry, docker_env, service="ecr-public")
        docker("push", tagged, env=docker_env)
        docker("push", private, env=docker_env)
        [image] = wharf.aws("ecr-public", "describe-images",
                            "--repository-name", "pub/busybox")["imageDetails"]
        assert image["imageTags"] == ["1"]

        # Log out: the public image still pulls, the private one does not.
        docker("logout", registry, env=docker_env)
        docker("rmi", tagged, private)
        docker("pull", tagged, env=docker_env)
        assert docker("image", "inspect", tagged, check=False).returncode == 0
        refused = docker("pull", private, env=docker_env, check=False)
        assert refused.returncode != 0
        text = (refused.stderr + refused.stdout).lower()
        assert "unauthorized" in text or "authentication required" in text, text

        # skopeo without credentials: the public image is there, the private one not.
        assert shutil.which("skopeo"), "skopeo is not installed (scripts/test installs it)"
        inspected = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--no-creds", f"docker://{tagged}"],
            capture_output=True, text=True, timeout=60)
        assert inspected.returncode == 0, inspected.stderr
        assert json.loads(inspected.stdout)["Digest"] == image["imageDigest"]
        private_inspect = subprocess.run(
            ["skopeo", "inspect", "--tls-verify=false", "--no-creds", f"docker://{private}"],
            capture_output=True, text=True, timeout=60)
        assert private_inspect.returncode != 0
    finally:
        docker("rmi", tagged, private, check=False)


def http(method, url, headers=None, data=None):
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def push_orphan(registry, password, repo, payload: bytes) -> str:
    import hashlib
    digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    auth = {"Authorization": "Basic " + base64.b64encode(f"AWS:{password}".encode()).decode()}
    status, body = http("POST", f"http://{registry}/v2/{repo}/blobs/uploads/?digest={digest}",
                        auth, payload)
    assert status == 201, body
    status, _ = http("HEAD", f"http://{registry}/v2/{repo}/blobs/{digest}", auth)
    assert status == 200
    return digest


def test_garbage_collection_reclaims_orphans_while_serving(wharf_factory, docker_env):
    # Pushed with the default schedule, then restarted collecting every second with a
    # one-second grace period.
    w = wharf_factory().start()
    registry = registry_address(w)
    w.aws("ecr", "create-repository", "--repository-name", "team/gc")
    password = login(w, registry, docker_env)
    tagged = f"{registry}/team/gc:1"
    docker("tag", IMAGE, tagged)
    try:
        docker("push", tagged, env=docker_env)
        orphan = push_orphan(registry, password, "team/gc", b"an orphan blob " * 100)
        blob_file = w.data_dir / "registry" / "blobs" / "sha256" / orphan[7:9] / orphan[7:]
        assert blob_file.exists()
        assert w.stop() == 0

        w.extra_env.update({"WHARF_REGISTRY_GC_INTERVAL_SECS": "1",
                            "WHARF_REGISTRY_GC_GRACE_SECS": "1"})
        w.start()
        registry = registry_address(w)
        deadline = time.monotonic() + 20
        while blob_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not blob_file.exists(), f"the orphan was not collected:\n{w.log()}"
        auth = {"Authorization": "Basic " + base64.b64encode(f"AWS:{password}".encode()).decode()}
        status, _ = http("HEAD", f"http://{registry}/v2/team/gc/blobs/{orphan}", auth)
        assert status == 404
        # An on-demand collection (owner credentials only) finds nothing left to free.
        status, _ = http("POST", f"http://{registry}/_wharf/registry/gc", {}, b"")
        assert status == 401
        status, body = http("POST", f"http://{registry}/_wharf/registry/gc", auth, b"")
        assert status == 200, body
        report = json.loads(body)
        assert report["blobsDeleted"] == 0 and report["marked"] >= 3, report
        # The image's blobs are referenced and stay: it pulls back whole.
        retagged = f"{registry}/team/gc:1"
        docker("login", "--username", "AWS", "--password-stdin", registry,
               env=docker_env, stdin=password)
        docker("rmi", tagged)
        docker("pull", retagged, env=docker_env)
        docker("rmi", retagged, check=False)
    finally:
        docker("rmi", tagged, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server():
    port = free_port()
    proc = subprocess.Popen([str(REPO_ROOT / "scripts" / "start-test-s3"), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"scripts/start-test-s3 exited {proc.returncode}: "
                        f"{proc.stderr.read().decode(errors='replace')}")
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except urllib.error.HTTPError:
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the S3 server did not answer")
    yield endpoint
    proc.kill()
    proc.wait()


def test_s3_blob_storage_selected_from_the_command_line(wharf_factory, docker_env, s3_server):
    creds = {"AWS_ACCESS_KEY_ID": "s3key", "AWS_SECRET_ACCESS_KEY": "s3secret",
             "AWS_REGION": "us-east-1"}
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                      aws_access_key_id="s3key", aws_secret_access_key="s3secret")
    s3.create_bucket(Bucket="wharf-blobs")
    w = wharf_factory(extra_env={**creds, "WHARF_REGISTRY_STORAGE": "s3://wharf-blobs/reg",
                                 "WHARF_S3_ENDPOINT": s3_server}).start()
    registry = registry_address(w)
    w.aws("ecr", "create-repository", "--repository-name", "team/s3")
    login(w, registry, docker_env)
    tagged = f"{registry}/team/s3:1"
    docker("tag", IMAGE, tagged)
    try:
        docker("push", tagged, env=docker_env)
        [image] = w.aws("ecr", "describe-images", "--repository-name", "team/s3")["imageDetails"]
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="wharf-blobs")["Contents"]]
        assert f"reg/blobs/sha256/{image['imageDigest'][7:]}" in keys, keys
        assert not (w.data_dir / "registry" / "blobs" / "sha256").exists()
        docker("rmi", tagged)
        docker("pull", tagged, env=docker_env)
    finally:
        docker("rmi", tagged, check=False)
