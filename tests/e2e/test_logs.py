"""`wharf logs` against the real Docker engine: a task's container output read through
the control plane from the local agent, for the `json-file` driver: every container,
one container, the tail, and following. (ECS's RegisterTaskDefinition refuses
`logDriver: none`, so the `none` path is covered by the in-process test in
crates/wharf-cli/src/logs.rs, not here.)

Nothing is pulled: the image is built locally by scripts/build-test-images and the
agent runs with ECS_IMAGE_PULL_BEHAVIOR=prefer-cached. The containers the test caused
are removed by the label naming its agent's container instance, even when it fails.
"""

import queue
import shutil
import signal
import subprocess
import threading
import time

import pytest

from conftest import REPO_ROOT, wharf_bin

IMAGE = "wharf-test/busybox:latest"
INSTANCE_LABEL = "wharf.container-instance-arn"
AGENT_ENV = {
    "ECS_IMAGE_PULL_BEHAVIOR": "prefer-cached",
    "ECS_CONTAINER_STOP_TIMEOUT": "2s",
}
DEADLINE_S = 30.0
# Prints three lines (one on stderr), then one more once the test creates /tmp/go.
APP_SCRIPT = (
    "echo first line; sleep 0.3; echo to stderr >&2; sleep 0.3; echo second line; "
    "while [ ! -f /tmp/go ]; do sleep 0.1; done; echo after follow; exec sleep 3600"
)


def docker(*args: str, check: bool = True, timeout: float = 60) -> str:
    res = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert res.returncode == 0, f"docker {' '.join(args)}: {res.returncode}\n{res.stderr}"
    return res.stdout


def wait_for(what: str, probe, deadline_s: float = DEADLINE_S, interval: float = 0.25):
    end = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < end:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {deadline_s}s waiting for {what}; last: {last!r}",
                pytrace=False)


@pytest.fixture
def node(wharf_factory):
    """`wharf up` with its local agent: (wharf, ecs, instance ARN); removes the
    instance's containers at teardown."""
    if shutil.which("docker") is None:
        pytest.fail("docker is not installed", pytrace=False)
    subprocess.run([str(REPO_ROOT / "scripts" / "build-test-images")], check=True)
    w = wharf_factory(agent=True, extra_env=AGENT_ENV)
    instances = []
    try:
        w.start()
        ecs = w.client()

        def registered():
            try:
                return ecs.list_container_instances(cluster="default")["containerInstanceArns"]
            except ecs.exceptions.ClusterNotFoundException:
                return None
        arns = wait_for("the local agent to register", registered)
        instances.extend(arns)
        yield w, ecs, arns[0]
    finally:
        if w.proc is not None and w.proc.poll() is None:
            w.stop()
        for arn in instances:
            ids = docker("ps", "-aq", "--no-trunc", "--filter",
                         f"label={INSTANCE_LABEL}={arn}", check=False).split()
            if ids:
                docker("rm", "-f", *ids, check=False)


def wharf_logs(w, *args: str, timeout: float = DEADLINE_S) -> subprocess.CompletedProcess:
    return subprocess.run([wharf_bin(), "logs", "--data-dir", str(w.data_dir), *args],
                          capture_output=True, text=True, timeout=timeout)


def test_logs_of_a_running_task(node):
    w, ecs, _ = node
    ecs.register_task_definition(family="logs", containerDefinitions=[
        {"name": "app", "image": IMAGE, "memory": 32, "essential": True,
         "command": ["sh", "-c", APP_SCRIPT],
         "logConfiguration": {"logDriver": "json-file"}},
        {"name": "side", "image": IMAGE, "memory": 32, "essential": True,
         "command": ["sh", "-c", "echo side line; exec sleep 3600"]},
    ])
    task = ecs.run_task(taskDefinition="logs")["tasks"][0]
    task_arn = task["taskArn"]
    task_id = task_arn.rsplit("/", 1)[1]
    wait_for("the task to run", lambda: ecs.describe_tasks(tasks=[task_arn])["tasks"][0]
             ["lastStatus"] == "RUNNING")

    def app_logged():
        res = wharf_logs(w, task_id, "--container", "app")
        return res.returncode == 0 and "second line" in res.stdout and res
    res = wait_for("the app's lines", app_logged)
    lines = res.stdout.splitlines()
    # Docker keeps the order within one stream; a stdout and a stderr line written
    # together may come back either way round.
    assert sorted(lines) == sorted(["first line", "to stderr", "second line"]), res.stdout
    assert [l for l in lines if l != "to stderr"] == ["first line", "second line"], res.stdout

    # Every container, by ARN: lines prefixed with the container name, each
    # container's in order (the containers' streams interleave as they arrive).
    res = wharf_logs(w, task_arn)
    assert res.returncode == 0, res.stderr
    printed = res.stdout.splitlines()
    assert [l for l in printed if l.startswith("app | ")] == [
        "app | first line", "app | to stderr", "app | second line"], res.stdout
    assert [l for l in printed if not l.startswith("app | ")] == ["side | side line"], \
        res.stdout

    # A container the task does not have: a non-zero exit with the reason.
    res = wharf_logs(w, task_id, "--container", "nope")
    assert res.returncode != 0
    assert res.stdout == ""
    assert "LogsUnavailableException" in res.stderr and "nope" in res.stderr, res.stderr

    # Unknown task: the control plane's error.
    res = wharf_logs(w, "0123456789abcdef0123456789abcdef")
    assert res.returncode != 0
    assert "InvalidParameterException" in res.stderr, res.stderr

    # Following: the lines so far, then one the container prints after the call started.
    follower = subprocess.Popen(
        [wharf_bin(), "logs", "--data-dir", str(w.data_dir), task_id,
         "--container", "app", "--follow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout],
                     daemon=True).start()

    def next_line() -> str:
        try:
            return lines.get(timeout=DEADLINE_S).rstrip("\n")
        except queue.Empty:
            follower.kill()
            pytest.fail(f"wharf logs --follow printed nothing more; stderr: "
                        f"{follower.stderr.read()}", pytrace=False)

    try:
        assert [next_line() for _ in range(3)] == ["first line", "to stderr", "second line"]
        assert follower.poll() is None, "--follow ended early"
        app = docker("ps", "-q", "--filter", f"label=com.amazonaws.ecs.task-arn={task_arn}",
                     "--filter", "label=com.amazonaws.ecs.container-name=app").split()
        assert len(app) == 1, app
        docker("exec", app[0], "touch", "/tmp/go")
        assert next_line() == "after follow"
        assert follower.poll() is None, "--follow ended while the container runs"
    finally:
        follower.terminate()
        follower.wait(timeout=10)

    # The tail: only the last line.
    res = wharf_logs(w, task_id, "--container", "app", "--tail", "1")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "after follow\n"

    # A stopped task's logs stay readable while its containers are kept.
    ecs.stop_task(task=task_arn)
    wait_for("the task to stop", lambda: ecs.describe_tasks(tasks=[task_arn])["tasks"][0]
             ["lastStatus"] == "STOPPED")
    res = wharf_logs(w, task_id, "--container", "app")
    assert res.returncode == 0, res.stderr
    assert "after follow" in res.stdout


@pytest.mark.parametrize("command", ["up", "server"])
def test_sigterm_ends_a_follow_and_the_control_plane_exits(wharf_factory, tmp_path, command):
    """A `wharf logs --follow` open on a running task must not hold the control plane's
    graceful shutdown: on SIGTERM it exits promptly with status 0 and the follower is
    told that its stream broke off. With `wharf up` the local agent goes down with the
    control plane; with `wharf server` the agent is a process of its own that stays
    connected, which is the case where nothing but the shutdown can end the stream."""
    from test_agent import AgentProcess  # a `wharf agent` process of its own

    if shutil.which("docker") is None:
        pytest.fail("docker is not installed", pytrace=False)
    subprocess.run([str(REPO_ROOT / "scripts" / "build-test-images")], check=True)
    if command == "up":
        w = wharf_factory(agent=True, extra_env=AGENT_ENV)
        agent = None
    else:
        w = wharf_factory(command="server")
        agent = AgentProcess(w.endpoint, "default", tmp_path / "agentdata")
    instances = []
    follower = None
    try:
        w.start()
        ecs = w.client()
        if agent is not None:
            ecs.create_cluster(clusterName="default")
            agent.start()

        def registered():
            try:
                return ecs.list_container_instances(cluster="default")["containerInstanceArns"]
            except ecs.exceptions.ClusterNotFoundException:
                return None
        instances.extend(wait_for("the agent to register", registered))
        ecs.register_task_definition(family="follow-stop", containerDefinitions=[
            {"name": "app", "image": IMAGE, "memory": 32, "essential": True,
             "command": ["sh", "-c", "echo ready; exec sleep 3600"],
             "logConfiguration": {"logDriver": "json-file"}},
        ])
        task_arn = ecs.run_task(taskDefinition="follow-stop")["tasks"][0]["taskArn"]
        wait_for("the task to run", lambda: ecs.describe_tasks(tasks=[task_arn])["tasks"][0]
                 ["lastStatus"] == "RUNNING")

        follower = subprocess.Popen(
            [wharf_bin(), "logs", "--data-dir", str(w.data_dir), task_arn, "--follow"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout],
                         daemon=True).start()
        try:
            first = lines.get(timeout=DEADLINE_S)
        except queue.Empty:
            pytest.fail("wharf logs --follow printed nothing", pytrace=False)
        assert first == "ready\n"
        assert follower.poll() is None, "--follow ended while the container runs"

        # The control plane's own deadline for a clean exit, well under the harness's.
        w.proc.send_signal(signal.SIGTERM)
        try:
            code = w.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            w.kill()
            pytest.fail(f"wharf {command} did not exit within 5s of SIGTERM while a "
                        f"--follow was open:\n{w.log()}", pytrace=False)
        assert code == 0, f"wharf {command} exited {code}:\n{w.log()}"

        # The follower learns that its stream broke off; it does not take it for the
        # end of the container's output.
        try:
            follower.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail("wharf logs --follow went on after the control plane exited",
                        pytrace=False)
        stderr = follower.stderr.read()
        assert follower.returncode != 0, stderr
        assert "broke off" in stderr, stderr
        if agent is not None:
            assert agent.running(), "the agent must outlive the control plane:\n" + agent.log()
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait()
        if agent is not None:
            agent.stop()
        w.kill()
        for arn in instances:
            ids = docker("ps", "-aq", "--no-trunc", "--filter",
                         f"label={INSTANCE_LABEL}={arn}", check=False).split()
            if ids:
                docker("rm", "-f", *ids, check=False)
