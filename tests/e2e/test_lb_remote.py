"""`wharf lb --control-plane URL`: a standalone data plane following a remote control
plane (`wharf server`, which runs no data plane of its own). The load balancer is made
with boto3 against the control plane; requests go through the standalone lb, which
binds 127.0.0.2 (Linux loopback answers all of 127/8), and the health it observes
shows in DescribeTargetHealth on the control plane. The control plane is killed with
SIGKILL and restarted: the lb keeps serving meanwhile and follows again afterwards.
"""

import http.server
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import ROOT_KEY_ID, ROOT_SECRET, free_port, wharf_bin

DEADLINE_S = 30.0
LB_ADDR = "127.0.0.2"


class Backend:
    """A small HTTP server answering every GET with its name."""

    def __init__(self):
        outer = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                outer.requests += 1
                body = b"backend says hi"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
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
def backend():
    made = Backend()
    yield made
    made.close()


class RemoteLb:
    """One `wharf lb --control-plane …` process."""

    def __init__(self, endpoint: str, log_path):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("WHARF_") and not k.startswith("AWS_")}
        env.update({"WHARF_LOG": "info", "AWS_ACCESS_KEY_ID": ROOT_KEY_ID,
                    "AWS_SECRET_ACCESS_KEY": ROOT_SECRET})
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [wharf_bin(), "lb", "--control-plane", endpoint, "--addr", LB_ADDR],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "<no log>"

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"wharf lb did not exit on SIGTERM:\n{self.log()}")
        return self.proc.returncode


@pytest.fixture
def remote_lb_factory(tmp_path):
    made: list[RemoteLb] = []

    def make(endpoint: str) -> RemoteLb:
        lb = RemoteLb(endpoint, tmp_path / f"lb-{len(made)}.log")
        made.append(lb)
        return lb

    yield make
    for lb in made:
        lb.stop()


def fetch(port: int, path: str):
    """GET through the standalone lb; returns (status, body bytes)."""
    try:
        with urllib.request.urlopen(f"http://{LB_ADDR}:{port}{path}", timeout=5) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_for(what: str, probe, deadline_s: float = DEADLINE_S, lb: RemoteLb | None = None):
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
    log = f"\nlb log:\n{lb.log()}" if lb else ""
    pytest.fail(f"{what} within {deadline_s}s; last: {last!r}{log}")


def port_closed(port: int) -> bool:
    try:
        with socket.create_connection((LB_ADDR, port), timeout=1):
            return False
    except OSError:
        return True


def fixed_rule(elbv2, listener_arn: str, priority: int, path: str, body: str):
    elbv2.create_rule(
        ListenerArn=listener_arn, Priority=priority,
        Conditions=[{"Field": "path-pattern", "Values": [path]}],
        Actions=[{"Type": "fixed-response", "FixedResponseConfig": {
            "StatusCode": "200", "ContentType": "text/plain", "MessageBody": body}}])


def test_standalone_lb_follows_a_remote_control_plane(wharf_factory, backend,
                                                      remote_lb_factory):
    control = wharf_factory(command="server").start()
    elbv2 = control.client("elbv2")
    lb_arn = elbv2.create_load_balancer(Name="remote")["LoadBalancers"][0]["LoadBalancerArn"]
    tg_arn = elbv2.create_target_group(
        Name="remote-web", Protocol="HTTP", Port=backend.port, TargetType="ip",
        VpcId="vpc-1", HealthCheckPath="/", HealthCheckIntervalSeconds=5,
        HealthCheckTimeoutSeconds=2, HealthyThresholdCount=2,
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.register_targets(TargetGroupArn=tg_arn,
                           Targets=[{"Id": "127.0.0.1", "Port": backend.port}])
    port = free_port()
    listener_arn = elbv2.create_listener(
        LoadBalancerArn=lb_arn, Protocol="HTTP", Port=port,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
    )["Listeners"][0]["ListenerArn"]

    lb = remote_lb_factory(control.endpoint)
    assert wait_for("the standalone lb forwarding to the backend",
                    lambda: fetch(port, "/") == (200, b"backend says hi"), lb=lb)
    # The control plane runs no data plane: nothing listens on 127.0.0.1 at that port.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()

    # The remote lb's health checks are written back to the control plane.
    def health():
        [desc] = elbv2.describe_target_health(
            TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
        return desc["TargetHealth"]["State"] == "healthy" and desc

    desc = wait_for("DescribeTargetHealth turning healthy", health, lb=lb)
    assert (desc["Target"]["Id"], desc["Target"]["Port"]) == ("127.0.0.1", backend.port)

    # A rule added on the control plane is followed.
    fixed_rule(elbv2, listener_arn, 1, "/fixed", "fixed by a rule")
    assert wait_for("the rule's fixed response",
                    lambda: fetch(port, "/fixed") == (200, b"fixed by a rule"), lb=lb)

    # The control plane dies: the lb keeps serving the last configuration it had.
    control.kill()
    served = backend.requests
    for _ in range(20):
        assert fetch(port, "/") == (200, b"backend says hi")
        assert fetch(port, "/fixed") == (200, b"fixed by a rule")
    assert backend.requests >= served + 20
    assert lb.proc.poll() is None, lb.log()

    # Restarted on the same address, changes made afterwards are followed.
    control.start()
    elbv2 = control.client("elbv2")
    fixed_rule(elbv2, listener_arn, 2, "/later", "made after the restart")
    assert wait_for("a rule made after the restart",
                    lambda: fetch(port, "/later") == (200, b"made after the restart"), lb=lb)

    # Deleting the listener closes the port.
    elbv2.delete_listener(ListenerArn=listener_arn)
    assert wait_for("the listener's port closed", lambda: port_closed(port), lb=lb)

    # The control plane stops on SIGTERM even with the lb's feed open (the feed ends
    # with the server), and the lb, left alone, still stops cleanly.
    assert control.stop() == 0, control.log()
    assert lb.proc.poll() is None, lb.log()
    assert lb.stop() == 0, lb.log()
