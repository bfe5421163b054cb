"""The node agent on the machine's real Docker engine: tasks run as containers, driven
through boto3, observed through DescribeTasks, `docker inspect` and the task metadata
endpoint; and an agent (and a control plane) killed and restarted under running tasks.

Every test removes the containers it caused, found by the label that names its agent's
container instance, even when it fails. Nothing is pulled: the image is built locally by
scripts/build-test-images and the agent runs with ECS_IMAGE_PULL_BEHAVIOR=prefer-cached.
"""

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT, ROOT_KEY_ID, ROOT_SECRET, STOP_DEADLINE_S, wharf_bin

IMAGE = "wharf-test/busybox:latest"
FAST = {"Delay": 1, "MaxAttempts": 30}
INSTANCE_LABEL = "wharf.container-instance-arn"
TASK_LABEL = "com.amazonaws.ecs.task-arn"
NAME_LABEL = "com.amazonaws.ecs.container-name"
# What every agent here runs with: no pulls, and a short grace period before SIGKILL.
AGENT_ENV = {
    "ECS_IMAGE_PULL_BEHAVIOR": "prefer-cached",
    "ECS_CONTAINER_STOP_TIMEOUT": "2s",
}
REGISTER_DEADLINE_S = 20.0


# --- docker helpers ----------------------------------------------------------------------

def docker(*args: str, check: bool = True, timeout: float = 30) -> str:
    res = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert res.returncode == 0, f"docker {' '.join(args)}: {res.returncode}\n{res.stderr}"
    return res.stdout


def containers_by_label(label: str, value: str, running_only: bool = False) -> list[str]:
    args = ["ps", "-q", "--no-trunc", "--filter", f"label={label}={value}"]
    if not running_only:
        args.insert(1, "-a")
    return docker(*args).split()


def inspect(ids: list[str]) -> list[dict]:
    return json.loads(docker("inspect", *ids)) if ids else []


def task_containers(task_arn: str) -> dict[str, dict]:
    """The task's containers by container name, as `docker inspect` sees them."""
    return {c["Config"]["Labels"][NAME_LABEL]: c
            for c in inspect(containers_by_label(TASK_LABEL, task_arn))}


def remove_instance_containers(instance_arns: list[str]) -> None:
    for arn in instance_arns:
        ids = containers_by_label(INSTANCE_LABEL, arn)
        if ids:
            docker("rm", "-f", *ids, check=False, timeout=60)


def docker_time(value: str) -> float:
    """Seconds since the epoch of one of Docker's RFC 3339 nanosecond timestamps."""
    from datetime import datetime
    if value.startswith("0001-"):
        return 0.0
    date, _, frac = value.rstrip("Z").partition(".")
    return datetime.fromisoformat(date + "+00:00").timestamp() + float("0." + (frac or "0"))


def wait_for(what: str, probe, deadline_s: float = 20.0, interval: float = 0.25):
    """Calls probe until it returns something truthy; fails with `what` (and the last
    value) at the deadline."""
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {deadline_s}s waiting for {what}; last: {last!r}",
                pytrace=False)


# --- the agent under test ------------------------------------------------------------------

def instance_arn_of(ecs, cluster: str) -> str:
    def registered():
        try:
            return ecs.list_container_instances(cluster=cluster)["containerInstanceArns"]
        except ecs.exceptions.ClusterNotFoundException:
            return None  # `wharf up` creates `default` just before registering
    arns = wait_for(f"an agent to register into {cluster}", registered, REGISTER_DEADLINE_S)
    assert len(arns) == 1, arns
    return arns[0]


class AgentProcess:
    """A `wharf agent` process of its own, against an endpoint and cluster."""

    def __init__(self, endpoint: str, cluster: str, data_dir: Path):
        self.endpoint = endpoint
        self.cluster = cluster
        self.data_dir = Path(data_dir)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}-agent-{self.starts}.log"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return "<no log>"

    def start(self) -> "AgentProcess":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("WHARF_") and not k.startswith("ECS_")}
        env.update(AGENT_ENV)
        env.update({
            "WHARF_LOG": "info",
            "ECS_BACKEND_HOST": self.endpoint,
            "ECS_CLUSTER": self.cluster,
            "ECS_DATADIR": str(self.data_dir),
            "WHARF_ACCESS_KEY_ID": ROOT_KEY_ID,
            "WHARF_SECRET_ACCESS_KEY": ROOT_SECRET,
            "WHARF_REGION": "us-east-1",
        })
        # An empty --config file, so that a host's /etc/ecs/ecs.config cannot leak in.
        config = self.data_dir.parent / f"{self.data_dir.name}-ecs.config"
        config.write_text("")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([wharf_bin(), "agent", "--config", str(config)],
                                         stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> int | None:
        if not self.running():
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9


@pytest.fixture
def cleanup(wharf_factory):
    """Collects instance ARNs, agents and wharf processes; at teardown stops them all
    (agents first, so nothing starts a container behind the removal) and removes every
    container carrying one of the collected instance ARNs."""
    state = {"instances": [], "agents": [], "wharfs": []}
    yield state
    failures = []
    for agent in state["agents"]:
        code = agent.stop()
        if code not in (None, 0):
            failures.append(f"wharf agent exited {code} on SIGTERM:\n{agent.log()}")
    for w in state["wharfs"]:
        if w.proc is not None and w.proc.poll() is None:
            code = w.stop()
            if code != 0:
                failures.append(f"wharf {w.command} exited {code} on SIGTERM:\n{w.log()}")
    remove_instance_containers(state["instances"])
    assert not failures, "\n".join(failures)


@pytest.fixture
def node(wharf_factory, cleanup):
    """`wharf up` with its local agent on the real Docker engine: (wharf, ecs, instance ARN)."""
    if shutil.which("docker") is None:
        pytest.fail("docker is not installed", pytrace=False)
    subprocess.run([str(REPO_ROOT / "scripts" / "build-test-images")], check=True)
    w = wharf_factory(agent=True, extra_env=AGENT_ENV)
    cleanup["wharfs"].append(w)
    w.start()
    ecs = w.client()
    arn = instance_arn_of(ecs, "default")
    cleanup["instances"].append(arn)
    return w, ecs, arn


def register(ecs, family: str, *containers: dict) -> str:
    defs = []
    for c in containers:
        d = {"image": IMAGE, "memory": 32, "essential": True}
        d.update(c)
        defs.append(d)
    out = ecs.register_task_definition(family=family, containerDefinitions=defs)
    return out["taskDefinition"]["taskDefinitionArn"]


def run_one(ecs, td: str, cluster: str = "default") -> str:
    out = ecs.run_task(cluster=cluster, taskDefinition=td)
    assert out["failures"] == [], out["failures"]
    [task] = out["tasks"]
    return task["taskArn"]


def describe(ecs, arn: str, cluster: str = "default") -> dict:
    [t] = ecs.describe_tasks(cluster=cluster, tasks=[arn])["tasks"]
    return t


def by_name(task: dict) -> dict[str, dict]:
    return {c["name"]: c for c in task["containers"]}


def sh(script: str) -> list[str]:
    return ["sh", "-c", script]


# --- tests ---------------------------------------------------------------------------------

def test_http_task_runs_serves_and_stops(node):
    w, ecs, instance = node
    # "web" handles TERM (exit 0); "stubborn" is sleep as PID 1, which ignores TERM and is
    # killed after the 2 s stop timeout (137).
    td = register(
        ecs, "web",
        {"name": "web",
         "command": sh("mkdir -p /www && echo hello-from-wharf > /www/index.html && "
                       "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"),
         "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}]},
        {"name": "stubborn", "command": ["sleep", "3600"]},
    )
    arn = run_one(ecs, td)
    ecs.get_waiter("tasks_running").wait(cluster="default", tasks=[arn], WaiterConfig=FAST)
    t = describe(ecs, arn)
    assert t["lastStatus"] == "RUNNING"
    assert t["containerInstanceArn"] == instance
    web = by_name(t)["web"]
    assert web["lastStatus"] == "RUNNING"
    [binding] = web["networkBindings"]
    assert binding["containerPort"] == 8080
    port = binding["hostPort"]
    assert 0 < port < 65536

    # The container really is that task's, and Docker publishes the port reported.
    seen = task_containers(arn)
    assert set(seen) == {"web", "stubborn"}
    labels = seen["web"]["Config"]["Labels"]
    assert labels[INSTANCE_LABEL] == instance
    assert labels["com.amazonaws.ecs.cluster"].endswith(":cluster/default")
    assert web.get("runtimeId") == seen["web"]["Id"]
    published = seen["web"]["NetworkSettings"]["Ports"]["8080/tcp"]
    assert str(port) in {p["HostPort"] for p in published}

    # Both containers' 32 MiB are reserved on the instance while the task runs.
    assert _memory(ecs, instance, "remainingResources") == \
        _memory(ecs, instance, "registeredResources") - 64

    body = wait_for("httpd to answer", lambda: _get(f"http://127.0.0.1:{port}/"), 10)
    assert body == "hello-from-wharf\n"

    stopped = ecs.stop_task(cluster="default", task=arn, reason="e2e stop")["task"]
    assert stopped["desiredStatus"] == "STOPPED"
    ecs.get_waiter("tasks_stopped").wait(cluster="default", tasks=[arn], WaiterConfig=FAST)
    t = describe(ecs, arn)
    assert t["stopCode"] == "UserInitiated"
    assert t["stoppedReason"] == "e2e stop"
    codes = {c["name"]: c.get("exitCode") for c in t["containers"]}
    assert codes == {"web": 0, "stubborn": 137}, t["containers"]
    for c in task_containers(arn).values():
        assert not c["State"]["Running"]
    assert _get(f"http://127.0.0.1:{port}/") is None
    assert _memory(ecs, instance, "remainingResources") == \
        _memory(ecs, instance, "registeredResources")


def _memory(ecs, instance: str, which: str) -> int:
    [ci] = ecs.describe_container_instances(cluster="default",
                                            containerInstances=[instance])["containerInstances"]
    return {r["name"]: r.get("integerValue") for r in ci[which]}["MEMORY"]


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as res:
            return res.read().decode()
    except OSError:
        return None


def test_essential_exit_stops_task_but_sidecar_exit_does_not(node):
    w, ecs, instance = node
    job = register(ecs, "job", {"name": "main", "command": sh("sleep 1; exit 3")})
    sidecar = register(
        ecs, "sidecar",
        {"name": "main", "command": sh("trap 'exit 0' TERM; sleep 3600 & wait")},
        {"name": "side", "essential": False, "command": sh("sleep 1; exit 5")},
    )
    job_arn = run_one(ecs, job)
    side_arn = run_one(ecs, sidecar)

    ecs.get_waiter("tasks_stopped").wait(cluster="default", tasks=[job_arn], WaiterConfig=FAST)
    t = describe(ecs, job_arn)
    assert t["stoppedReason"] == "Essential container in task exited"
    assert t["stopCode"] == "EssentialContainerExited"
    assert by_name(t)["main"]["exitCode"] == 3
    assert by_name(t)["main"]["lastStatus"] == "STOPPED"
    assert task_containers(job_arn)["main"]["State"]["ExitCode"] == 3

    def side_stopped():
        c = by_name(describe(ecs, side_arn))["side"]
        return c if c["lastStatus"] == "STOPPED" else None
    side = wait_for("the sidecar to be reported STOPPED", side_stopped, 20)
    assert side["exitCode"] == 5
    time.sleep(2)  # time enough for a wrong stop to show
    t = describe(ecs, side_arn)
    assert t["lastStatus"] == "RUNNING" and t["desiredStatus"] == "RUNNING", t
    assert by_name(t)["main"]["lastStatus"] == "RUNNING"
    assert task_containers(side_arn)["main"]["State"]["Running"]

    ecs.stop_task(cluster="default", task=side_arn)
    ecs.get_waiter("tasks_stopped").wait(cluster="default", tasks=[side_arn], WaiterConfig=FAST)
    assert by_name(describe(ecs, side_arn))["main"]["exitCode"] == 0


def test_depends_on_success(node):
    w, ecs, instance = node
    ok = register(
        ecs, "deps-ok",
        {"name": "init", "essential": False, "command": sh("sleep 1; exit 0")},
        {"name": "main", "command": sh("trap 'exit 0' TERM; sleep 3600 & wait"),
         "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]},
    )
    bad = register(
        ecs, "deps-bad",
        {"name": "init", "essential": False, "command": sh("sleep 1; exit 1")},
        {"name": "main", "command": sh("trap 'exit 0' TERM; sleep 3600 & wait"),
         "dependsOn": [{"containerName": "init", "condition": "SUCCESS"}]},
    )
    ok_arn = run_one(ecs, ok)
    bad_arn = run_one(ecs, bad)

    ecs.get_waiter("tasks_running").wait(cluster="default", tasks=[ok_arn], WaiterConfig=FAST)
    t = describe(ecs, ok_arn)
    assert by_name(t)["init"]["lastStatus"] == "STOPPED"
    assert by_name(t)["init"]["exitCode"] == 0
    assert by_name(t)["main"]["lastStatus"] == "RUNNING"
    seen = task_containers(ok_arn)
    init_finished = docker_time(seen["init"]["State"]["FinishedAt"])
    main_started = docker_time(seen["main"]["State"]["StartedAt"])
    assert init_finished > 0 and main_started >= init_finished, (
        seen["init"]["State"], seen["main"]["State"])

    ecs.get_waiter("tasks_stopped").wait(cluster="default", tasks=[bad_arn], WaiterConfig=FAST)
    t = describe(ecs, bad_arn)
    assert by_name(t)["init"]["exitCode"] == 1
    assert t["stopCode"] == "EssentialContainerExited"
    main = by_name(t)["main"]
    assert main["lastStatus"] == "STOPPED"
    assert "exitCode" not in main, t["containers"]
    assert "init" in main.get("reason", ""), main  # says which dependency failed
    main = task_containers(bad_arn).get("main")
    # Never started: either never created, or created and never run.
    assert main is None or docker_time(main["State"]["StartedAt"]) == 0, main["State"]


HEALTH = {"interval": 5, "timeout": 2, "retries": 1, "startPeriod": 0}  # 5 s: ECS's minimum


def run_health_task(ecs) -> tuple[str, dict[str, dict]]:
    """A task with a failing and a passing health check; returns its ARN and its
    containers once Docker sees "sick" unhealthy and "fine" healthy."""
    td = register(
        ecs, "health",
        {"name": "sick", "command": ["sleep", "3600"],
         "healthCheck": {"command": ["CMD-SHELL", "exit 1"], **HEALTH}},
        {"name": "fine", "command": ["sleep", "3600"],
         "healthCheck": {"command": ["CMD-SHELL", "exit 0"], **HEALTH}},
    )
    arn = run_one(ecs, td)
    ecs.get_waiter("tasks_running").wait(cluster="default", tasks=[arn], WaiterConfig=FAST)

    def docker_health():
        seen = task_containers(arn)
        states = {n: c["State"].get("Health", {}).get("Status") for n, c in seen.items()}
        return seen if states == {"sick": "unhealthy", "fine": "healthy"} else None
    return arn, wait_for("Docker to see sick unhealthy and fine healthy", docker_health, 15)


def test_health_check_runs_and_the_agent_sees_it(node):
    w, ecs, instance = node
    arn, seen = run_health_task(ecs)
    test = seen["sick"]["Config"]["Healthcheck"]
    assert test["Test"] == ["CMD-SHELL", "exit 1"]
    assert test["Interval"] == 5_000_000_000 and test["Retries"] == 1

    # The agent's own view, through the metadata endpoint of the container.
    doc = json.loads(docker("exec", seen["fine"]["Id"], "sh", "-c",
                            'wget -q -O - "$ECS_CONTAINER_METADATA_URI_V4/task"'))
    health = {c["Name"]: c.get("Health", {}).get("status") for c in doc["Containers"]}
    assert health == {"sick": "UNHEALTHY", "fine": "HEALTHY"}, doc["Containers"]
    # An unhealthy container does not stop a standalone task.
    assert describe(ecs, arn)["lastStatus"] == "RUNNING"


def test_health_status_reported_by_describe_tasks(node):
    w, ecs, instance = node
    arn, _ = run_health_task(ecs)

    # Docker has seen both checks' results; give the report a few seconds to land.
    end = time.monotonic() + 3
    while True:
        t = describe(ecs, arn)
        health = {c["name"]: c.get("healthStatus") for c in t["containers"]}
        if health == {"sick": "UNHEALTHY", "fine": "HEALTHY"} or time.monotonic() > end:
            break
        time.sleep(0.25)
    assert health == {"sick": "UNHEALTHY", "fine": "HEALTHY"}, t["containers"]
    # An essential container is unhealthy, so the task is.
    assert t["healthStatus"] == "UNHEALTHY"


def test_metadata_endpoint_from_inside_the_container(node):
    w, ecs, instance = node
    td = register(ecs, "meta", {"name": "app", "command": ["sleep", "3600"]})
    arn = run_one(ecs, td)
    ecs.get_waiter("tasks_running").wait(cluster="default", tasks=[arn], WaiterConfig=FAST)
    cid = task_containers(arn)["app"]["Id"]

    env = docker("exec", cid, "sh", "-c", 'echo "$ECS_CONTAINER_METADATA_URI_V4"').strip()
    assert env.startswith("http://"), env
    task_doc = json.loads(docker(
        "exec", cid, "sh", "-c", 'wget -q -O - "$ECS_CONTAINER_METADATA_URI_V4/task"'))
    assert task_doc["TaskARN"] == arn
    assert task_doc["Family"] == "meta"
    assert task_doc["KnownStatus"] == "RUNNING"
    [c] = task_doc["Containers"]
    assert c["DockerId"] == cid
    assert c["Name"] == "app"
    container_doc = json.loads(docker(
        "exec", cid, "sh", "-c", 'wget -q -O - "$ECS_CONTAINER_METADATA_URI_V4"'))
    assert container_doc["DockerId"] == cid
    assert container_doc["Labels"][TASK_LABEL] == arn


# --- a separate agent, killed and restarted --------------------------------------------

def test_agent_and_control_plane_restarts(wharf_factory, cleanup, tmp_path):
    subprocess.run([str(REPO_ROOT / "scripts" / "build-test-images")], check=True)
    server = wharf_factory(command="server")
    cleanup["wharfs"].append(server)
    server.start()
    ecs = server.client()
    ecs.create_cluster(clusterName="restarts")
    agent = AgentProcess(server.endpoint, "restarts", tmp_path / "agentdata")
    cleanup["agents"].append(agent)
    agent.start()
    instance = instance_arn_of(ecs, "restarts")
    cleanup["instances"].append(instance)

    td = register(ecs, "keep", {"name": "app",
                                "command": sh("trap 'exit 0' TERM; sleep 3600 & wait")})
    out = ecs.run_task(cluster="restarts", taskDefinition=td, count=2)
    assert out["failures"] == []
    arns = [t["taskArn"] for t in out["tasks"]]
    ecs.get_waiter("tasks_running").wait(cluster="restarts", tasks=arns, WaiterConfig=FAST)
    before = sorted(containers_by_label(INSTANCE_LABEL, instance, running_only=True))
    assert len(before) == 2

    # SIGKILL: the containers do not notice.
    agent.kill()
    assert sorted(containers_by_label(INSTANCE_LABEL, instance, running_only=True)) == before

    # Restarted on the same data directory: the same instance, which adopts them.
    agent.start()
    wait_for("the agent to reconnect", lambda: _connected(ecs, "restarts", instance), 20)
    assert ecs.list_container_instances(cluster="restarts")["containerInstanceArns"] == [instance]
    time.sleep(3)  # time enough for a wrong duplicate start to show
    assert sorted(containers_by_label(INSTANCE_LABEL, instance)) == before
    assert sorted(containers_by_label(INSTANCE_LABEL, instance, running_only=True)) == before
    assert {t["lastStatus"] for t in ecs.describe_tasks(cluster="restarts",
                                                        tasks=arns)["tasks"]} == {"RUNNING"}

    # Stopped while the agent is down: done once it is back.
    agent.kill()
    gone, kept = arns
    ecs.stop_task(cluster="restarts", task=gone, reason="while the agent was down")
    time.sleep(1)
    assert len(containers_by_label(INSTANCE_LABEL, instance, running_only=True)) == 2
    agent.start()
    ecs.get_waiter("tasks_stopped").wait(cluster="restarts", tasks=[gone], WaiterConfig=FAST)
    t = describe(ecs, gone, "restarts")
    assert t["stoppedReason"] == "while the agent was down"
    assert by_name(t)["app"]["exitCode"] == 0
    assert not task_containers(gone)["app"]["State"]["Running"]
    assert task_containers(kept)["app"]["State"]["Running"]
    assert describe(ecs, kept, "restarts")["lastStatus"] == "RUNNING"
    assert ecs.list_container_instances(cluster="restarts")["containerInstanceArns"] == [instance]

    # The control plane restarts on the same port and data: the containers keep running
    # and the agent reconnects, which it shows by running a task placed after the restart.
    assert server.stop() == 0
    time.sleep(1)
    assert task_containers(kept)["app"]["State"]["Running"]
    server.start()
    ecs = server.client()
    wait_for("the agent to reconnect to the restarted control plane",
             lambda: _connected(ecs, "restarts", instance), 30)
    assert describe(ecs, kept, "restarts")["lastStatus"] == "RUNNING"
    assert describe(ecs, gone, "restarts")["lastStatus"] == "STOPPED"
    assert len(containers_by_label(INSTANCE_LABEL, instance, running_only=True)) == 1
    late = run_one(ecs, td, "restarts")
    ecs.stop_task(cluster="restarts", task=kept)
    ecs.get_waiter("tasks_running").wait(cluster="restarts", tasks=[late], WaiterConfig=FAST)
    ecs.get_waiter("tasks_stopped").wait(cluster="restarts", tasks=[kept], WaiterConfig=FAST)
    running = containers_by_label(INSTANCE_LABEL, instance, running_only=True)
    assert running == [task_containers(late)["app"]["Id"]]
    assert agent.running(), agent.log()

    # agentConnected is live: a killed agent is marked disconnected.
    agent.kill()
    wait_for("agentConnected false after the agent was killed",
             lambda: not _connected(ecs, "restarts", instance), 10)


def test_agent_connected_false_after_control_plane_restart_without_agent(
        wharf_factory, cleanup, tmp_path):
    server = wharf_factory(command="server", extra_env={"WHARF_AGENT_HEARTBEAT_MS": "500"})
    cleanup["wharfs"].append(server)
    server.start()
    ecs = server.client()
    ecs.create_cluster(clusterName="ghost")
    agent = AgentProcess(server.endpoint, "ghost", tmp_path / "agentdata")
    cleanup["agents"].append(agent)
    agent.start()
    instance = instance_arn_of(ecs, "ghost")
    cleanup["instances"].append(instance)
    wait_for("the agent to connect", lambda: _connected(ecs, "ghost", instance), 10)

    assert server.stop() == 0
    agent.kill()
    server.start()
    ecs = server.client()
    # Three heartbeats (1.5 s) is when a silent agent counts as gone; allow twice that.
    end = time.monotonic() + 3
    while time.monotonic() < end and _connected(ecs, "ghost", instance):
        time.sleep(0.25)
    assert not _connected(ecs, "ghost", instance), \
        "no agent is running, yet agentConnected is true after the control plane restarted"


def _connected(ecs, cluster: str, instance: str) -> bool:
    [ci] = ecs.describe_container_instances(cluster=cluster,
                                            containerInstances=[instance])["containerInstances"]
    return ci["agentConnected"] is True


def test_up_without_a_docker_engine_still_serves_the_api(wharf_factory, cleanup):
    """With no reachable engine, `wharf up` says so plainly and the API keeps serving."""
    w = wharf_factory(agent=True,
                      extra_env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    cleanup["wharfs"].append(w)
    w.start()
    ecs = w.client()
    ecs.create_cluster(clusterName="no-engine")
    assert ecs.describe_clusters(clusters=["no-engine"])["clusters"][0]["status"] == "ACTIVE"
    wait_for("the agent's refusal in the output",
             lambda: "agent:       not started" in w.log(), 10)
    # No agent ran, so it neither created the default cluster nor registered there.
    assert not any(arn.endswith("/default") for arn in ecs.list_clusters()["clusterArns"])
