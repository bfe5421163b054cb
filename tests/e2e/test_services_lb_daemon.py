"""Services with the load balancer and with the DAEMON strategy, end to end.

1. Two services of real containers (`wharf up` with its local agent on the real Docker
   engine) behind one listener whose two path rules forward `/a/*` and `/b/*` to one
   target group each: requests through the listener's port reach the right service, the
   target groups report the tasks' host ports healthy, and a service scaled to 0 has its
   targets drained and removed.
2. A DAEMON service over hollow container instances (`wharf sim` children of the test,
   against `wharf up --no-agent`): one task on every ACTIVE instance, following instances
   as they join, drain and leave, and none left once the service is deleted; a second
   `wharf sim` fleet with its own `--id-prefix` adds instances beside the first.

Containers are removed by the label naming the agent's container instance (test_agent's
`node` and `cleanup` fixtures); the `wharf sim` children are ended by the fixture that
started them, even when a test fails.
"""

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest

from conftest import free_port, wharf_bin
from test_agent import (  # noqa: F401  (fixtures are used by name)
    cleanup,
    containers_by_label,
    INSTANCE_LABEL,
    node,
    register,
    sh,
    wait_for,
)

STABLE = {"Delay": 1, "MaxAttempts": 60}
DEADLINE_S = 30.0


def fetch(port: int, path: str) -> tuple[int, bytes]:
    """GET through the listener: (status, body); (0, error) when the connection fails."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, OSError) as e:
        return 0, repr(e).encode()


# --- 1. two services behind one listener -------------------------------------------------

def httpd_td(ecs, family: str, directory: str, content: str) -> str:
    """busybox httpd on 8080 serving `content` at /<directory>/ (nothing at /)."""
    return register(
        ecs, family,
        {"name": "web",
         "command": sh(f"mkdir -p /www/{directory} && "
                       f"echo {content} > /www/{directory}/index.html && "
                       "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"),
         "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}]},
    )


def running_tasks(ecs, cluster: str, service: str) -> list[dict]:
    arns = ecs.list_tasks(cluster=cluster, serviceName=service)["taskArns"]
    if not arns:
        return []
    tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
    return [t for t in tasks if t["lastStatus"] == "RUNNING"]


def target_health(elb, tg_arn: str) -> list[dict]:
    return elb.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]


def test_two_services_behind_one_listener_with_path_rules(node):
    w, ecs, instance = node
    elb = w.client("elbv2")
    lb = elb.create_load_balancer(Name="front", Subnets=["subnet-1", "subnet-2"])[
        "LoadBalancers"][0]
    groups = {}
    for name in ("a", "b"):
        tg = elb.create_target_group(
            Name=f"tg-{name}", Protocol="HTTP", Port=80, VpcId="vpc-1",
            TargetType="instance", HealthCheckPath=f"/{name}/",
            HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2,
            HealthyThresholdCount=2, UnhealthyThresholdCount=2)["TargetGroups"][0]
        groups[name] = tg["TargetGroupArn"]
        elb.modify_target_group_attributes(
            TargetGroupArn=tg["TargetGroupArn"],
            Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "2"}])
    port = free_port()
    listener = elb.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=port,
        DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {
            "StatusCode": "404", "ContentType": "text/plain",
            "MessageBody": "no such path"}}])["Listeners"][0]
    for priority, name in enumerate(("a", "b"), 1):
        elb.create_rule(
            ListenerArn=listener["ListenerArn"], Priority=priority,
            Conditions=[{"Field": "path-pattern", "Values": [f"/{name}/*"]}],
            Actions=[{"Type": "forward", "TargetGroupArn": groups[name]}])

    for name, content in (("a", "A"), ("b", "B")):
        td = httpd_td(ecs, f"web-{name}", name, content)
        ecs.create_service(
            cluster="default", serviceName=f"svc-{name}", taskDefinition=td, desiredCount=2,
            loadBalancers=[{"targetGroupArn": groups[name], "containerName": "web",
                            "containerPort": 8080}])
    ecs.get_waiter("services_stable").wait(cluster="default", services=["svc-a", "svc-b"],
                                           WaiterConfig=STABLE)
    assert len(containers_by_label(INSTANCE_LABEL, instance, running_only=True)) == 4

    [ec2_id] = [i["ec2InstanceId"] for i in ecs.describe_container_instances(
        cluster="default", containerInstances=[instance])["containerInstances"]]
    for name in ("a", "b"):
        tasks = running_tasks(ecs, "default", f"svc-{name}")
        assert len(tasks) == 2
        host_ports = {t["containers"][0]["networkBindings"][0]["hostPort"] for t in tasks}
        assert len(host_ports) == 2
        health = wait_for(
            f"two healthy targets in tg-{name}",
            lambda: (h := target_health(elb, groups[name])) and len(h) == 2 and all(
                d["TargetHealth"]["State"] == "healthy" for d in h) and h, DEADLINE_S)
        assert {d["Target"]["Port"] for d in health} == host_ports
        assert {d["Target"]["Id"] for d in health} == {ec2_id}

    # Through the listener: each path to its own service, anything else to the default.
    assert wait_for("/a/ through the listener",
                    lambda: fetch(port, "/a/") == (200, b"A\n"), DEADLINE_S)
    for i in range(10):
        assert fetch(port, "/a/") == (200, b"A\n")
        assert fetch(port, "/b/") == (200, b"B\n")
        assert fetch(port, "/b/index.html") == (200, b"B\n")
    assert fetch(port, "/c") == (404, b"no such path")
    assert fetch(port, "/") == (404, b"no such path")

    # Scale a to 0: its targets drain, then leave the group; /a/ has nowhere to go.
    a_tasks = {t["taskArn"] for t in running_tasks(ecs, "default", "svc-a")}
    ecs.update_service(cluster="default", service="svc-a", desiredCount=0)
    states_seen: set[str] = set()

    def drained_and_removed():
        h = target_health(elb, groups["a"])
        states_seen.update(d["TargetHealth"]["State"] for d in h)
        return h == [] and "removed"

    wait_for("tg-a's targets drained and removed", drained_and_removed, DEADLINE_S, 0.1)
    assert "draining" in states_seen, states_seen
    assert wait_for("/a/ answering 503", lambda: fetch(port, "/a/")[0] == 503, DEADLINE_S)
    assert fetch(port, "/b/") == (200, b"B\n")
    assert fetch(port, "/c") == (404, b"no such path")
    ecs.get_waiter("services_stable").wait(cluster="default", services=["svc-a"],
                                           WaiterConfig=STABLE)
    wait_for("a's tasks STOPPED", lambda: {t["lastStatus"] for t in ecs.describe_tasks(
        cluster="default", tasks=sorted(a_tasks))["tasks"]} == {"STOPPED"}, DEADLINE_S)
    assert len(target_health(elb, groups["b"])) == 2
    wait_for("only b's two containers left",
             lambda: len(containers_by_label(INSTANCE_LABEL, instance,
                                             running_only=True)) == 2, DEADLINE_S)


# --- 2. a DAEMON service over hollow instances ----------------------------------------------

class Sim:
    """A `wharf sim` child over a Wharf's data directory (its endpoint and root key)."""

    def __init__(self, data_dir, log_path, *args: str):
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
        env["WHARF_LOG"] = "info"
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [wharf_bin(), "sim", "--data-dir", str(data_dir), "--heartbeat-secs", "2",
                 *args],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
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
        return self.proc.returncode


@pytest.fixture
def sims(tmp_path):
    """Starts `wharf sim` children; at teardown ends every one and checks it exited 0."""
    made: list[Sim] = []

    def start(data_dir, *args: str) -> Sim:
        sim = Sim(data_dir, tmp_path / f"sim-{len(made)}.log", *args)
        made.append(sim)
        return sim

    yield start
    codes = [(s, s.stop()) for s in made]
    bad = [f"exit {code}:\n{s.log()}" for s, code in codes if code != 0]
    assert not bad, "wharf sim did not end cleanly on SIGTERM:\n" + "\n".join(bad)


CLUSTER = "daemons"


def active_instances(ecs) -> set[str]:
    arns = ecs.list_container_instances(cluster=CLUSTER, status="ACTIVE")[
        "containerInstanceArns"]
    return set(arns)


def daemon_placement(ecs) -> Counter:
    """RUNNING tasks of the daemon service, counted by container instance."""
    return Counter(t["containerInstanceArn"] for t in running_tasks(ecs, CLUSTER, "agentd"))


def wait_one_per_instance(ecs, count: int, what: str) -> tuple[Counter, set[str]]:
    """Waits for exactly `count` RUNNING tasks of the daemon, one on each of the
    `count` ACTIVE instances; fails with the last placement seen at the deadline."""
    end = time.monotonic() + DEADLINE_S
    while True:
        placed = daemon_placement(ecs)
        instances = active_instances(ecs)
        if (len(instances) == count and sum(placed.values()) == count
                and set(placed) == instances and set(placed.values()) == {1}):
            return placed, instances
        if time.monotonic() > end:
            pytest.fail(f"timed out after {DEADLINE_S}s waiting for {what}: tasks per "
                        f"instance {dict(placed)}, ACTIVE instances {sorted(instances)}",
                        pytrace=False)
        time.sleep(0.25)


def test_daemon_service_follows_hollow_instances(wharf_factory, sims):
    w = wharf_factory().start()
    ecs = w.client()
    ecs.create_cluster(clusterName=CLUSTER)
    first = sims(w.data_dir, "--instances", "3", "--cluster", CLUSTER)
    wait_for("three hollow instances", lambda: len(active_instances(ecs)) == 3, DEADLINE_S)

    td = register(ecs, "agentd", {"name": "agentd", "command": ["sleep", "3600"]})
    created = ecs.create_service(cluster=CLUSTER, serviceName="agentd", taskDefinition=td,
                                 schedulingStrategy="DAEMON")["service"]
    assert created["schedulingStrategy"] == "DAEMON"
    placed, three = wait_one_per_instance(ecs, 3, "a daemon task on each of 3 instances")
    ecs.get_waiter("services_stable").wait(cluster=CLUSTER, services=["agentd"],
                                           WaiterConfig=STABLE)
    [svc] = ecs.describe_services(cluster=CLUSTER, services=["agentd"])["services"]
    assert (svc["desiredCount"], svc["runningCount"]) == (3, 3)

    # Two more instances join: the daemon follows them. The fleet is restarted with 5
    # instances: it takes its 3 back (same ids) and adds 2. (A second fleet beside the
    # first, with its own --id-prefix, is test_a_second_sim_fleet_adds_instances.)
    first_tasks = {t["taskArn"] for t in running_tasks(ecs, CLUSTER, "agentd")}
    assert first.stop() == 0
    second = sims(w.data_dir, "--instances", "5", "--cluster", CLUSTER)
    placed, five = wait_one_per_instance(ecs, 5, "a daemon task on each of 5 instances")
    assert three < five
    # The 3 instances' tasks were kept across the restart; 2 new ones joined them.
    assert first_tasks < {t["taskArn"] for t in running_tasks(ecs, CLUSTER, "agentd")}
    assert second.proc.poll() is None

    # A draining instance loses its daemon task and gets no replacement.
    drained = sorted(five)[0]
    out = ecs.update_container_instances_state(cluster=CLUSTER,
                                               containerInstances=[drained],
                                               status="DRAINING")
    assert out["failures"] == []
    placed, four = wait_one_per_instance(ecs, 4, "the drained instance's daemon task gone")
    assert drained not in placed and four == five - {drained}

    # A deregistered instance too.
    gone = sorted(four)[0]
    ecs.deregister_container_instance(cluster=CLUSTER, containerInstance=gone, force=True)
    placed, remaining = wait_one_per_instance(
        ecs, 3, "the deregistered instance's daemon task gone")
    assert remaining == four - {gone}
    assert drained not in placed and gone not in placed
    [svc] = ecs.describe_services(cluster=CLUSTER, services=["agentd"])["services"]
    assert svc["desiredCount"] == 3

    # Deleting the service (force: a daemon cannot be scaled to 0) stops every task.
    out = ecs.delete_service(cluster=CLUSTER, service="agentd", force=True)["service"]
    assert out["status"] == "DRAINING"
    wait_for("no daemon task left", lambda: not running_tasks(ecs, CLUSTER, "agentd")
             and ecs.list_tasks(cluster=CLUSTER, desiredStatus="RUNNING")["taskArns"] == [],
             DEADLINE_S)
    wait_for("the service INACTIVE", lambda: ecs.describe_services(
        cluster=CLUSTER, services=["agentd"])["services"][0]["status"] == "INACTIVE",
        DEADLINE_S)
    assert ecs.list_services(cluster=CLUSTER)["serviceArns"] == []


def test_a_second_sim_fleet_adds_instances(wharf_factory, sims):
    w = wharf_factory().start()
    ecs = w.client()
    ecs.create_cluster(clusterName=CLUSTER)
    sims(w.data_dir, "--instances", "3", "--cluster", CLUSTER)
    wait_for("three hollow instances", lambda: len(active_instances(ecs)) == 3, DEADLINE_S)
    second = sims(w.data_dir, "--instances", "2", "--cluster", CLUSTER, "--id-prefix", "second")
    wait_for("the second fleet registered",
             lambda: b"registered 2 connected 2" in second.log_path.read_bytes(), DEADLINE_S)
    assert len(active_instances(ecs)) == 5
