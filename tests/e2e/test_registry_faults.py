"""The registry under SIGKILL: `wharf up` is killed in the middle of a chunked blob
upload (between acknowledged chunks, while a chunk is still streaming, and right after
the closing PUT was acknowledged), restarted on the same data directory, and must then
never serve a partial blob, must keep what it acknowledged, and must take the retried
push. Plus concurrent pushes of one blob.

Talks the OCI Distribution API directly with `requests` (in the test venv), with the
password GetAuthorizationToken hands out.
"""

import hashlib
import json
import os
import re
import signal
import threading
import time

import pytest
import requests

MIB = 1024 * 1024
BLOB_SIZE = 24 * MIB
CHUNK = 4 * MIB
REPO = "faults/app"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def registry_url(w) -> str:
    """The registry's base URL as the current run of `wharf up` printed it."""
    deadline = time.monotonic() + 10
    while True:
        match = re.search(r"registry:\s+http://(\S+)", w.log())
        if match or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert match, f"wharf up printed no registry address:\n{w.log()}"
    return "http://" + match.group(1)


class Registry:
    """An authenticated OCI client of one `wharf up` run."""

    def __init__(self, w):
        self.base = registry_url(w)
        data = w.client("ecr").get_authorization_token()["authorizationData"][0]
        self.session = requests.Session()
        self.session.headers["Authorization"] = "Basic " + data["authorizationToken"]

    def url(self, location: str) -> str:
        return location if location.startswith("http") else self.base + location

    def start_upload(self) -> str:
        r = self.session.post(self.url(f"/v2/{REPO}/blobs/uploads/"), timeout=10)
        assert r.status_code == 202, (r.status_code, r.text)
        return self.url(r.headers["Location"])

    def patch(self, location: str, start: int, chunk, length: int | None = None,
              timeout: float = 30) -> requests.Response:
        """PATCHes one chunk; `chunk` is bytes or an iterator (then `length` is given)."""
        length = len(chunk) if length is None else length
        return self.session.patch(location, data=chunk, timeout=timeout, headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + length - 1}",
        })

    def put(self, location: str, digest: str, body: bytes = b"") -> requests.Response:
        sep = "&" if "?" in location else "?"
        return self.session.put(f"{location}{sep}digest={digest}", data=body, timeout=30,
                                headers={"Content-Type": "application/octet-stream"})

    def status(self, location: str) -> requests.Response:
        return self.session.get(location, timeout=10)

    def push_chunked(self, blob: bytes, chunk: int = CHUNK) -> requests.Response:
        loc = self.start_upload()
        for start in range(0, len(blob), chunk):
            r = self.patch(loc, start, blob[start:start + chunk])
            assert r.status_code == 202, (r.status_code, r.text)
            assert r.headers["Range"] == f"0-{start + len(blob[start:start + chunk]) - 1}"
            loc = self.url(r.headers["Location"])
        return self.put(loc, sha256(blob))

    def push_monolithic(self, blob: bytes) -> requests.Response:
        return self.session.post(
            self.url(f"/v2/{REPO}/blobs/uploads/?digest={sha256(blob)}"), data=blob,
            timeout=30, headers={"Content-Type": "application/octet-stream"})

    def head_blob(self, digest: str) -> requests.Response:
        return self.session.head(self.url(f"/v2/{REPO}/blobs/{digest}"), timeout=10)

    def get_blob(self, digest: str) -> requests.Response:
        return self.session.get(self.url(f"/v2/{REPO}/blobs/{digest}"), timeout=30)


def error_codes(r: requests.Response) -> list[str]:
    try:
        return [e["code"] for e in r.json()["errors"]]
    except (ValueError, KeyError, TypeError):
        return []


def assert_blob_unknown(reg: Registry, digest: str) -> None:
    head = reg.head_blob(digest)
    assert head.status_code == 404, (head.status_code, head.headers)
    get = reg.get_blob(digest)
    assert get.status_code == 404, f"a blob whose PUT was never acknowledged is served: " \
                                    f"{get.status_code}, {len(get.content)} bytes"
    assert error_codes(get) == ["BLOB_UNKNOWN"], get.text


def assert_blob_exact(reg: Registry, blob: bytes) -> None:
    digest = sha256(blob)
    head = reg.head_blob(digest)
    assert head.status_code == 200, (head.status_code, head.text)
    assert int(head.headers["Content-Length"]) == len(blob)
    assert head.headers["Docker-Content-Digest"] == digest
    get = reg.get_blob(digest)
    assert get.status_code == 200, (get.status_code, get.text[:200])
    assert len(get.content) == len(blob)
    assert sha256(get.content) == digest


def stored_blob(w, digest: str):
    """Where the filesystem blob store keeps a blob (`<data-dir>/registry/blobs/...`)."""
    alg, hex_ = digest.split(":")
    return w.data_dir / "registry" / "blobs" / alg / hex_[:2] / hex_


def push_and_pull_manifest(reg: Registry, layer: bytes, tag: str) -> None:
    config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
    r = reg.push_monolithic(config)
    assert r.status_code == 201, (r.status_code, r.text)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(layer), "size": len(layer)}],
    }).encode()
    r = reg.session.put(reg.url(f"/v2/{REPO}/manifests/{tag}"), data=manifest, timeout=10,
                        headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, (r.status_code, r.text)
    assert r.headers["Docker-Content-Digest"] == sha256(manifest)
    for ref in (tag, sha256(manifest)):
        got = reg.session.get(reg.url(f"/v2/{REPO}/manifests/{ref}"), timeout=10,
                              headers={"Accept": OCI_MANIFEST})
        assert got.status_code == 200, (got.status_code, got.text)
        assert got.content == manifest
        assert got.headers["Content-Type"] == OCI_MANIFEST
    # And the layer it names pulls byte-exact.
    assert_blob_exact(reg, layer)


def start_registry(wharf_factory):
    w = wharf_factory().start()
    w.client("ecr").create_repository(repositoryName=REPO)
    return w, Registry(w)


def sigkill_and_restart(w) -> Registry:
    w.proc.send_signal(signal.SIGKILL)
    w.proc.wait(timeout=10)
    assert w.proc.returncode == -signal.SIGKILL
    w.start()
    return Registry(w)


def check_old_session(reg: Registry, location: str, blob: bytes, acknowledged: int) -> str:
    """The session from before the kill either is gone (BLOB_UPLOAD_UNKNOWN) or resumes
    at exactly the acknowledged size and completes to the right digest. Returns which."""
    location = location.replace(location.split("/v2/")[0], reg.base)  # new port
    r = reg.status(location)
    if r.status_code == 404:
        assert error_codes(r) == ["BLOB_UPLOAD_UNKNOWN"], r.text
        return "unknown"
    assert r.status_code == 204, (r.status_code, r.text)
    m = re.fullmatch(r"0-(\d+)", r.headers["Range"])
    assert m, r.headers["Range"]
    size = int(m.group(1)) + 1
    # Acknowledged chunks survive; unacknowledged bytes are not counted.
    assert size == acknowledged, f"upload resumes at {size}, {acknowledged} were acknowledged"
    loc = reg.url(r.headers["Location"])
    for start in range(size, len(blob), CHUNK):
        p = reg.patch(loc, start, blob[start:start + CHUNK])
        assert p.status_code == 202, (p.status_code, p.text)
        loc = reg.url(p.headers["Location"])
    done = reg.put(loc, sha256(blob))
    assert done.status_code == 201, (done.status_code, done.text)
    assert done.headers["Docker-Content-Digest"] == sha256(blob)
    assert_blob_exact(reg, blob)
    return "resumed"


def test_sigkill_between_acknowledged_chunks(wharf_factory):
    w, reg = start_registry(wharf_factory)
    blob = os.urandom(BLOB_SIZE)
    digest = sha256(blob)
    loc = reg.start_upload()
    acknowledged = 0
    for start in range(0, 3 * CHUNK, CHUNK):
        r = reg.patch(loc, start, blob[start:start + CHUNK])
        assert r.status_code == 202, (r.status_code, r.text)
        acknowledged = start + CHUNK
        loc = reg.url(r.headers["Location"])

    reg = sigkill_and_restart(w)
    assert not stored_blob(w, digest).exists()
    assert_blob_unknown(reg, digest)
    outcome = check_old_session(reg, loc, blob, acknowledged)
    print(f"\nold session after SIGKILL: {outcome}")

    # A fresh push of the same blob succeeds whatever happened to the old session.
    r = reg.push_chunked(blob)
    assert r.status_code == 201, (r.status_code, r.text)
    assert r.headers["Docker-Content-Digest"] == digest
    assert_blob_exact(reg, blob)
    push_and_pull_manifest(reg, blob, "between-chunks")


def test_sigkill_while_a_chunk_is_streaming(wharf_factory):
    w, reg = start_registry(wharf_factory)
    blob = os.urandom(BLOB_SIZE)
    digest = sha256(blob)
    loc = reg.start_upload()
    for start in (0, CHUNK):
        r = reg.patch(loc, start, blob[start:start + CHUNK])
        assert r.status_code == 202, (r.status_code, r.text)
        loc = reg.url(r.headers["Location"])
    acknowledged = 2 * CHUNK

    # The third chunk (8 MiB declared) streams half of its bytes, then the server dies.
    chunk = blob[acknowledged:acknowledged + 2 * CHUNK]
    upload_file = w.data_dir / "registry" / "uploads" / loc.rstrip("/").rsplit("/", 1)[1]
    assert upload_file.stat().st_size == acknowledged
    killed = threading.Event()

    def body():
        for i in range(0, len(chunk), 256 * 1024):
            if i == len(chunk) // 2:
                # Kill only once part of this unacknowledged chunk reached the session's
                # file, so that the restart must discard bytes that are on disk.
                deadline = time.monotonic() + 10
                while upload_file.stat().st_size <= acknowledged:
                    assert time.monotonic() < deadline, "the server wrote none of the chunk"
                    time.sleep(0.01)
                w.proc.send_signal(signal.SIGKILL)
                killed.set()
                time.sleep(0.2)
            yield chunk[i:i + 256 * 1024]

    with pytest.raises(requests.exceptions.RequestException):
        r = reg.patch(loc, acknowledged, body(), length=len(chunk))
        pytest.fail(f"a PATCH whose server was killed mid-body answered "
                    f"{r.status_code}: {r.text}")
    assert killed.is_set()
    w.proc.wait(timeout=10)
    assert w.proc.returncode == -signal.SIGKILL
    on_disk = upload_file.stat().st_size
    assert acknowledged < on_disk < acknowledged + len(chunk), on_disk
    assert not stored_blob(w, digest).exists()
    w.start()
    reg = Registry(w)

    assert_blob_unknown(reg, digest)
    outcome = check_old_session(reg, loc, blob, acknowledged)
    print(f"\nold session after SIGKILL mid-chunk: {outcome}")

    r = reg.push_chunked(blob, chunk=6 * MIB)
    assert r.status_code == 201, (r.status_code, r.text)
    assert_blob_exact(reg, blob)
    push_and_pull_manifest(reg, blob, "mid-chunk")


def test_sigkill_right_after_the_closing_put(wharf_factory):
    w, reg = start_registry(wharf_factory)
    blob = os.urandom(BLOB_SIZE)
    r = reg.push_chunked(blob)
    assert r.status_code == 201, (r.status_code, r.text)
    assert r.headers["Docker-Content-Digest"] == sha256(blob)

    # Acknowledged: it must be served, byte-exact, after a SIGKILL.
    reg = sigkill_and_restart(w)
    assert_blob_exact(reg, blob)
    # Pushing it again is harmless, and an image can name it.
    again = reg.push_chunked(blob, chunk=8 * MIB)
    assert again.status_code == 201, (again.status_code, again.text)
    assert_blob_exact(reg, blob)
    push_and_pull_manifest(reg, blob, "after-put")

    # The tag and the blob survive one more SIGKILL.
    reg = sigkill_and_restart(w)
    assert_blob_exact(reg, blob)
    got = reg.session.get(reg.url(f"/v2/{REPO}/manifests/after-put"), timeout=10,
                          headers={"Accept": OCI_MANIFEST})
    assert got.status_code == 200, (got.status_code, got.text)


def test_concurrent_pushes_of_one_blob(wharf_factory):
    w, reg = start_registry(wharf_factory)
    blob = os.urandom(6 * MIB)
    digest = sha256(blob)
    results: list = [None] * 8
    barrier = threading.Barrier(8)

    def push(i: int):
        try:
            client = Registry.__new__(Registry)
            client.base = reg.base
            client.session = requests.Session()
            client.session.headers.update(reg.session.headers)
            barrier.wait(timeout=10)
            # Half push in chunks, half in one request, so both paths race.
            r = client.push_chunked(blob, chunk=2 * MIB) if i % 2 else \
                client.push_monolithic(blob)
            results[i] = (r.status_code, r.headers.get("Docker-Content-Digest"), r.text)
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = e

    threads = [threading.Thread(target=push, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive(), "a push hung"
    for i, res in enumerate(results):
        assert isinstance(res, tuple), f"push {i} failed: {res!r}"
        assert res[:2] == (201, digest), f"push {i}: {res}"
    assert_blob_exact(reg, blob)
    # One blob: the store holds a single file of that content.
    stored = [p for p in w.data_dir.rglob(digest.split(":")[1]) if p.is_file()]
    assert stored == [stored_blob(w, digest)], stored
    assert stored[0].stat().st_size == len(blob)
    # No upload session or temporary file is left behind by the losers of the race.
    leftovers = [p for d in ("uploads", "tmp")
                 for p in (w.data_dir / "registry" / d).iterdir()]
    assert leftovers == [], leftovers
    push_and_pull_manifest(reg, blob, "concurrent")
