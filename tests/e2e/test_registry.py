"""The image registry through the real clients: the AWS CLI's ECR commands and the
docker CLI, against `wharf up`'s registry listener."""

import os
import re
import subprocess
import tempfile
import time

import pytest

IMAGE = "wharf-test/busybox:latest"


def docker(*args, env=None, stdin=None, check=True):
    res = subprocess.run(["docker", *args], env=env, input=stdin, capture_output=True,
                         text=True, timeout=120)
    if check and res.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} exited {res.returncode}: {res.stderr}")
    return res


def registry_address(wharf) -> str:
    """The registry's address, once `wharf up` printed it (a moment after the API
    answers its health check)."""
    deadline = time.monotonic() + 10
    while True:
        match = re.search(r"registry:\s+http://(\S+)", wharf.log())
        if match or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert match, f"wharf up printed no registry address:\n{wharf.log()}"
    return match.group(1)


@pytest.fixture
def docker_env():
    """A private docker client config, so that logins never touch the user's."""
    with tempfile.TemporaryDirectory() as config:
        yield {**os.environ, "DOCKER_CONFIG": config}


def test_login_push_describe_pull(wharf, docker_env):
    registry = registry_address(wharf)
    repo = wharf.aws("ecr", "create-repository", "--repository-name", "team/web")["repository"]
    assert repo["repositoryUri"] == f"{registry}/team/web"
    assert repo["repositoryArn"].endswith(":repository/team/web")

    password = wharf.aws_run("ecr", "get-login-password")
    assert password.returncode == 0, password.stderr
    assert ":" not in password.stdout.strip()
    login = docker("login", "--username", "AWS", "--password-stdin", registry,
                   env=docker_env, stdin=password.stdout)
    assert "Login Succeeded" in login.stdout

    tagged = f"{registry}/team/web:1"
    docker("tag", IMAGE, tagged)
    try:
        docker("push", tagged, env=docker_env)
        details = wharf.aws("ecr", "describe-images", "--repository-name", "team/web")
        [image] = details["imageDetails"]
        assert image["imageTags"] == ["1"]
        assert image["imageSizeInBytes"] > 0
        local_digest = docker("inspect", "--format", "{{index .RepoDigests 0}}", tagged,
                              env=docker_env).stdout.strip()
        assert local_digest.endswith(image["imageDigest"])

        # Pull it back after removing the local tag.
        docker("rmi", tagged)
        docker("pull", tagged, env=docker_env)

        # ECR refuses pushes to repositories nobody created.
        uncreated = f"{registry}/team/nobody:1"
        docker("tag", IMAGE, uncreated)
        try:
            refused = docker("push", uncreated, env=docker_env, check=False)
            assert refused.returncode != 0
            assert "name unknown" in (refused.stderr + refused.stdout).lower()
        finally:
            docker("rmi", uncreated, check=False)
    finally:
        docker("rmi", tagged, check=False)


def test_private_repositories_refuse_anonymous_pulls(wharf, docker_env):
    registry = registry_address(wharf)
    wharf.aws("ecr", "create-repository", "--repository-name", "private/app")
    refused = docker("pull", f"{registry}/private/app:1", env=docker_env, check=False)
    assert refused.returncode != 0
    text = (refused.stderr + refused.stdout).lower()
    assert "unauthorized" in text or "no basic auth credentials" in text, text


def test_an_agent_pulls_from_the_registry_with_its_own_token(wharf_factory, docker_env):
    w = wharf_factory(agent=True, extra_env={"ECS_CONTAINER_STOP_TIMEOUT": "1s"})
    w.start()
    registry = registry_address(w)
    image = f"{registry}/team/pulled:1"
    ecs = w.client()
    instance = None
    try:
        w.aws("ecr", "create-repository", "--repository-name", "team/pulled")
        password = w.aws_run("ecr", "get-login-password").stdout
        docker("login", "--username", "AWS", "--password-stdin", registry,
               env=docker_env, stdin=password)
        docker("tag", IMAGE, image)
        docker("push", image, env=docker_env)
        # Only the registry has the image now: the agent must pull it.
        docker("rmi", image)
        assert docker("image", "inspect", image, check=False).returncode != 0

        ecs.register_task_definition(family="pulled", containerDefinitions=[{
            "name": "app", "image": image, "memory": 32, "command": ["sleep", "600"]}])
        arn = ecs.run_task(taskDefinition="pulled")["tasks"][0]["taskArn"]
        instance = ecs.list_container_instances()["containerInstanceArns"][0]
        ecs.get_waiter("tasks_running").wait(
            tasks=[arn], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        task = ecs.describe_tasks(tasks=[arn])["tasks"][0]
        assert task["lastStatus"] == "RUNNING"
        assert "pullStartedAt" in task and "pullStoppedAt" in task
        assert docker("image", "inspect", image, check=False).returncode == 0
        ecs.stop_task(task=arn)
        ecs.get_waiter("tasks_stopped").wait(
            tasks=[arn], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    finally:
        w.stop()
        if instance:
            ids = docker("ps", "-aq", "--filter",
                         f"label=wharf.container-instance-arn={instance}").stdout.split()
            if ids:
                docker("rm", "-f", *ids, check=False)
        docker("rmi", image, check=False)
