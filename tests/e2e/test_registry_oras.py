"""OCI artifacts and referrers through oras (the ORAS project's Python SDK, `oras` on
PyPI) against `wharf up`'s registry: push an artifact, attach referrers to it through
their `subject`, discover them with the referrers API and its artifactType filter, and
pull them back."""

import hashlib
import json
import re
import time
import urllib.parse

import oras.client
import oras.oci

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
APP_CONFIG = "application/vnd.example.app.config.v1+json"
SIGNATURE_TYPE = "application/vnd.example.signature.v1"
SBOM_TYPE = "application/vnd.example.sbom.v1+json"


def registry_address(wharf) -> str:
    """The registry's address, which `wharf up` prints just after it is healthy."""
    deadline = time.monotonic() + 10
    while True:
        match = re.search(r"registry:\s+http://(\S+)", wharf.log())
        if match:
            return match.group(1)
        assert time.monotonic() < deadline, f"wharf up printed no registry address:\n{wharf.log()}"
        time.sleep(0.05)


def oras_client(wharf, registry: str) -> oras.client.OrasClient:
    """An oras client holding an ECR token for `registry` (as `docker login` would)."""
    password = wharf.aws_run("ecr", "get-login-password")
    assert password.returncode == 0, password.stderr
    client = oras.client.OrasClient(hostname=registry, insecure=True, auth_backend="basic")
    client.auth.set_basic_auth("AWS", password.stdout.strip())
    return client


def push(client, target: str, tmp_path, name: str, content: bytes, config_type: str,
         subject=None):
    """Pushes one file as an artifact whose config has `config_type`; returns the
    manifest PUT's response."""
    data = tmp_path / name
    data.write_bytes(content)
    config = tmp_path / f"{name}.config.json"
    config.write_text("{}")
    response = client.push(
        target=target,
        files=[f"{data}:application/vnd.example.file"],
        manifest_config=f"{config}:{config_type}",
        manifest_annotations={"org.example.name": name},
        subject=subject,
        disable_path_validation=True,
        quiet=True,
    )
    assert response.status_code == 201, response.text
    return response


def test_push_attach_discover_and_pull_with_oras(wharf, tmp_path):
    registry = registry_address(wharf)
    wharf.aws("ecr", "create-repository", "--repository-name", "oras/app")
    client = oras_client(wharf, registry)
    base = f"http://{registry}/v2/oras/app"

    # The artifact everything else refers to.
    app = push(client, f"{registry}/oras/app:v1", tmp_path, "app.bin", b"the application\n",
               APP_CONFIG)
    app_digest = app.headers["Docker-Content-Digest"]
    raw = client.do_request(f"{base}/manifests/v1", "GET", headers={"Accept": OCI_MANIFEST})
    assert raw.status_code == 200, raw.text
    assert "sha256:" + hashlib.sha256(raw.content).hexdigest() == app_digest
    subject = oras.oci.Subject(mediaType=OCI_MANIFEST, digest=app_digest, size=len(raw.content))

    # Two referrers of different artifact types; the registry acknowledges the subject.
    signature = push(client, f"{registry}/oras/app:v1-signature", tmp_path, "app.sig",
                     b"signed by the build\n", SIGNATURE_TYPE, subject=subject)
    assert signature.headers["OCI-Subject"] == app_digest
    sbom = push(client, f"{registry}/oras/app:v1-sbom", tmp_path, "app.sbom.json",
                json.dumps({"packages": ["app"]}).encode(), SBOM_TYPE, subject=subject)
    assert sbom.headers["OCI-Subject"] == app_digest
    signature_digest = signature.headers["Docker-Content-Digest"]
    sbom_digest = sbom.headers["Docker-Content-Digest"]

    # Discovery: every referrer, then only signatures.
    listed = client.do_request(f"{base}/referrers/{app_digest}", "GET")
    assert listed.status_code == 200, listed.text
    assert listed.headers["Content-Type"] == OCI_INDEX
    assert "OCI-Filters-Applied" not in listed.headers
    index = listed.json()
    assert index["mediaType"] == OCI_INDEX
    by_digest = {m["digest"]: m for m in index["manifests"]}
    assert set(by_digest) == {signature_digest, sbom_digest}
    assert by_digest[signature_digest]["artifactType"] == SIGNATURE_TYPE
    assert by_digest[sbom_digest]["artifactType"] == SBOM_TYPE
    assert by_digest[sbom_digest]["annotations"]["org.example.name"] == "app.sbom.json"

    query = urllib.parse.urlencode({"artifactType": SIGNATURE_TYPE})
    filtered = client.do_request(f"{base}/referrers/{app_digest}?{query}", "GET")
    assert filtered.status_code == 200, filtered.text
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    [found] = filtered.json()["manifests"]
    assert found["digest"] == signature_digest
    assert found["mediaType"] == OCI_MANIFEST

    # Pull the discovered signature back by digest, and the artifact by tag.
    out = tmp_path / "pulled"
    [path] = client.pull(target=f"{registry}/oras/app@{found['digest']}", outdir=str(out))
    assert open(path, "rb").read() == b"signed by the build\n"
    [path] = client.pull(target=f"{registry}/oras/app:v1", outdir=str(out / "app"))
    assert open(path, "rb").read() == b"the application\n"

    # A digest nothing refers to has an empty list, not a 404.
    nothing = "sha256:" + hashlib.sha256(b"no referrers").hexdigest()
    empty = client.do_request(f"{base}/referrers/{nothing}", "GET")
    assert empty.status_code == 200, empty.text
    assert empty.json()["manifests"] == []
