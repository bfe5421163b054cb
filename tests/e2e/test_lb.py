"""The load balancer's data plane end to end: a load balancer, two target groups and a
listener with path rules made with the real AWS CLI against `wharf up`, then real HTTP
requests through the listener's port to two HTTP servers the test runs on 127.0.0.1.
"""

import http.server
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest

DEADLINE_S = 20.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Backend:
    """A small HTTP server that answers with its name and what it was sent."""

    def __init__(self, name: str):
        outer = self
        self.name = name
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                if self.path != "/health":
                    outer.requests += 1
                body = json.dumps({
                    "server": outer.name,
                    "path": self.path,
                    "host": self.headers.get("Host"),
                    "xff": self.headers.get("X-Forwarded-For"),
                    "proto": self.headers.get("X-Forwarded-Proto"),
                    "port": self.headers.get("X-Forwarded-Port"),
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backends():
    made = [Backend("alpha"), Backend("beta")]
    yield made
    for b in made:
        b.close()


def fetch(port: int, path: str, headers: dict | None = None):
    """GET through the listener; returns (status, body bytes)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for(what: str, probe, deadline_s: float = DEADLINE_S):
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
            if last:
                return last
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            last = e
        time.sleep(0.1)
    pytest.fail(f"{what} within {deadline_s}s; last: {last!r}")


def test_listener_routes_to_two_target_groups_and_reports_their_health(wharf, backends):
    alpha, beta = backends
    lb = wharf.aws("elbv2", "create-load-balancer", "--name", "front")["LoadBalancers"][0]
    groups = {}
    for backend in backends:
        tg = wharf.aws("elbv2", "create-target-group", "--name", backend.name,
                       "--protocol", "HTTP", "--port", str(backend.port), "--target-type", "ip",
                       "--vpc-id", "vpc-1", "--health-check-path", "/health",
                       "--health-check-interval-seconds", "5",
                       "--health-check-timeout-seconds", "2",
                       "--healthy-threshold-count", "2")["TargetGroups"][0]
        groups[backend.name] = tg["TargetGroupArn"]
        wharf.aws("elbv2", "register-targets", "--target-group-arn", tg["TargetGroupArn"],
                  "--targets", f"Id=127.0.0.1,Port={backend.port}")
    port = free_port()
    listener = wharf.aws(
        "elbv2", "create-listener", "--load-balancer-arn", lb["LoadBalancerArn"],
        "--protocol", "HTTP", "--port", str(port),
        "--default-actions",
        "Type=fixed-response,FixedResponseConfig={StatusCode=404,ContentType=text/plain,"
        "MessageBody=nothing here}")["Listeners"][0]
    for priority, (prefix, name) in enumerate([("/alpha/*", "alpha"), ("/beta/*", "beta")], 1):
        wharf.aws("elbv2", "create-rule", "--listener-arn", listener["ListenerArn"],
                  "--priority", str(priority),
                  "--conditions", json.dumps([{"Field": "path-pattern", "Values": [prefix]}]),
                  "--actions", json.dumps([{"Type": "forward",
                                            "TargetGroupArn": groups[name]}]))

    # The listener's port serves the rules as soon as the data plane has seen them.
    status, body = wait_for(
        "the listener forwarding /alpha/ to alpha",
        lambda: (lambda r: r if r[0] == 200 else None)(fetch(port, "/alpha/index.html")))
    seen = json.loads(body)
    assert seen["server"] == "alpha"
    assert seen["path"] == "/alpha/index.html"
    assert seen["xff"] == "127.0.0.1"
    assert seen["proto"] == "http"
    assert seen["port"] == str(port)
    assert seen["host"] == f"127.0.0.1:{port}"

    status, body = fetch(port, "/beta/x?y=1", headers={"X-Forwarded-For": "198.51.100.4"})
    assert status == 200
    seen = json.loads(body)
    assert seen["server"] == "beta"
    assert seen["path"] == "/beta/x?y=1"
    assert seen["xff"] == "198.51.100.4, 127.0.0.1"

    assert fetch(port, "/gamma/") == (404, b"nothing here")

    # Both targets are health-checked and reported healthy through the API.
    def healthy(name):
        out = wharf.aws("elbv2", "describe-target-health",
                        "--target-group-arn", groups[name])
        [desc] = out["TargetHealthDescriptions"]
        return desc if desc["TargetHealth"]["State"] == "healthy" else None

    for backend in backends:
        desc = wait_for(f"{backend.name} healthy", lambda: healthy(backend.name))
        assert (desc["Target"]["Id"], desc["Target"]["Port"]) == ("127.0.0.1", backend.port)

    # Many requests: each path goes to its own group, none fails.
    before = (alpha.requests, beta.requests)
    for i in range(50):
        status, body = fetch(port, f"/alpha/{i}" if i % 2 else f"/beta/{i}")
        assert status == 200
        assert json.loads(body)["server"] == ("alpha" if i % 2 else "beta")
    assert (alpha.requests - before[0], beta.requests - before[1]) == (25, 25)

    # A deregistered target drains at once: no new requests reach it, and with no
    # other target in its group the listener answers 503.
    wharf.aws("elbv2", "deregister-targets", "--target-group-arn", groups["alpha"],
              "--targets", f"Id=127.0.0.1,Port={alpha.port}")
    wait_for("alpha draining answers 503",
             lambda: fetch(port, "/alpha/after")[0] == 503)
    assert fetch(port, "/beta/still")[0] == 200


def test_listener_port_closes_when_the_listener_is_deleted(wharf):
    lb = wharf.aws("elbv2", "create-load-balancer", "--name", "brief")["LoadBalancers"][0]
    port = free_port()
    listener = wharf.aws(
        "elbv2", "create-listener", "--load-balancer-arn", lb["LoadBalancerArn"],
        "--protocol", "HTTP", "--port", str(port),
        "--default-actions",
        "Type=fixed-response,FixedResponseConfig={StatusCode=200,MessageBody=hi}")[
        "Listeners"][0]
    wait_for("the listener answering", lambda: fetch(port, "/") == (200, b"hi"))
    wharf.aws("elbv2", "delete-listener", "--listener-arn", listener["ListenerArn"])

    def closed():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return False
        except OSError:
            return True

    wait_for("the listener's port closed", closed)


def _static_config(listener_port: int, backend_port: int) -> dict:
    lb = "arn:aws:elasticloadbalancing:us-east-1:000000000000:loadbalancer/app/solo/1"
    tg = "arn:aws:elasticloadbalancing:us-east-1:000000000000:targetgroup/solo/1"
    return {
        "elbv2/us-east-1/lb/solo": {
            "arn": lb, "name": "solo", "scheme": "internal", "lbType": "application",
            "dnsName": "solo.localhost", "state": "active", "createdMs": 0},
        "elbv2/us-east-1/listener/solo/1": {
            "arn": lb.replace(":loadbalancer/", ":listener/") + "/1",
            "loadBalancerArn": lb, "port": listener_port, "protocol": "HTTP",
            "defaultActions": [{"type": "forward", "order": 1, "stickiness_seconds": None,
                                "target_groups": [{"arn": tg, "weight": 1}]}]},
        "elbv2/us-east-1/tg/solo": {
            "arn": tg, "name": "solo", "protocol": "HTTP", "protocolVersion": "HTTP1",
            "port": backend_port, "targetType": "ip", "vpcId": None, "attributes": {},
            "healthCheck": {"enabled": True, "protocol": "HTTP", "port": "traffic-port",
                            "path": "/health", "intervalSeconds": 5, "timeoutSeconds": 2,
                            "healthyThreshold": 2, "unhealthyThreshold": 2,
                            "matcher": "200"}},
        f"elbv2/us-east-1/target/solo/127.0.0.1:{backend_port}": {
            "id": "127.0.0.1", "port": backend_port, "address": f"127.0.0.1:{backend_port}",
            "availabilityZone": None, "registeredMs": 0, "drainUntilMs": None},
    }


def test_wharf_lb_serves_a_static_configuration(tmp_path, backends):
    import subprocess
    from conftest import wharf_bin

    alpha = backends[0]
    port = free_port()
    config = tmp_path / "routes.json"
    config.write_text(json.dumps(_static_config(port, alpha.port)))
    log = tmp_path / "access.log"
    proc = subprocess.Popen([wharf_bin(), "lb", "--config", str(config), "--threads", "1",
                             "--access-log", str(log)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        status, body = wait_for(
            "wharf lb forwarding",
            lambda: (lambda r: r if r[0] == 200 else None)(fetch(port, "/solo")))
        assert json.loads(body)["server"] == "alpha"
        wait_for("an access log line", lambda: " GET /solo HTTP/1.1 200 " in (
            log.read_text() if log.exists() else ""))
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0

    # A record of the wrong shape is refused before anything is served, naming its key.
    broken = _static_config(port, alpha.port)
    del broken["elbv2/us-east-1/tg/solo"]["healthCheck"]
    config.write_text(json.dumps(broken))
    res = subprocess.run([wharf_bin(), "lb", "--config", str(config)], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode != 0
    assert "elbv2/us-east-1/tg/solo" in res.stderr
    assert "healthCheck" in res.stderr
