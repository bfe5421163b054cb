"""The README walkthrough, with the real AWS CLI."""

import json
import os
import subprocess

from conftest import REPO_ROOT, cli_service_error_exit_code, wharf_bin

ACCOUNT = "000000000000"


def test_readme_walkthrough(wharf):
    web = REPO_ROOT / "examples" / "web.json"
    assert web.exists(), "examples/web.json is missing"
    spec = json.loads(web.read_text())

    out = wharf.aws("ecs", "create-cluster", "--cluster-name", "demo")
    cluster = out["cluster"]
    assert cluster["clusterName"] == "demo"
    assert cluster["clusterArn"] == f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/demo"
    assert cluster["status"] == "ACTIVE"

    out = wharf.aws("ecs", "register-task-definition", "--cli-input-json", "file://examples/web.json")
    td = out["taskDefinition"]
    assert td["family"] == "web"
    assert td["revision"] == 1
    assert td["status"] == "ACTIVE"
    assert td["taskDefinitionArn"] == f"arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/web:1"
    [container] = td["containerDefinitions"]
    assert container["name"] == "web"
    assert container["image"] == "busybox"
    assert container["memory"] == 64
    assert [m["containerPort"] for m in container["portMappings"]] == [8080]
    if spec.get("tags"):
        assert out.get("tags") == spec["tags"]

    out = wharf.aws("ecs", "register-task-definition", "--cli-input-json", "file://examples/web.json")
    assert out["taskDefinition"]["revision"] == 2

    out = wharf.aws("ecs", "list-task-definitions")
    assert out["taskDefinitionArns"] == [
        f"arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/web:1",
        f"arn:aws:ecs:us-east-1:{ACCOUNT}:task-definition/web:2",
    ]
    out = wharf.aws("ecs", "list-task-definitions", "--family-prefix", "web", "--sort", "DESC")
    assert out["taskDefinitionArns"][0].endswith("task-definition/web:2")

    out = wharf.aws("ecs", "describe-clusters", "--clusters", "demo", "nope",
                    "--include", "STATISTICS", "TAGS")
    [c] = out["clusters"]
    assert c["clusterName"] == "demo"
    assert c["status"] == "ACTIVE"
    assert c["registeredContainerInstancesCount"] == 0
    assert c["runningTasksCount"] == 0
    assert c["pendingTasksCount"] == 0
    assert c["activeServicesCount"] == 0
    assert isinstance(c.get("statistics"), list), c
    assert c.get("tags") == [], c
    assert out["failures"] == [{
        "arn": f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/nope", "reason": "MISSING"}]

    out = wharf.aws("ecs", "list-clusters")
    assert out["clusterArns"] == [f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/demo"]


def test_generated_key_via_wharf_env(wharf_factory):
    """Without --root-access-key, wharf generates a key and `wharf env` points the CLI at it."""
    w = wharf_factory(root_key=None).start()
    creds = w.credentials_file
    assert creds.exists()
    assert oct(os.stat(creds).st_mode & 0o777) == oct(0o600)
    assert "aws_access_key_id = AKIA" in creds.read_text()

    res = subprocess.run([wharf_bin(), "env", "--data-dir", str(w.data_dir)],
                         capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, res.stderr
    exports = {}
    for line in res.stdout.splitlines():
        assert line.startswith("export "), line
        name, _, value = line[len("export "):].partition("=")
        exports[name] = value.strip("'\"")
    assert set(exports) >= {"AWS_ENDPOINT_URL", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"}
    assert exports["AWS_ENDPOINT_URL"] == w.endpoint

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(exports)
    env["AWS_PAGER"] = ""
    out = w.aws("ecs", "create-cluster", "--cluster-name", "fromenv", env=env)
    assert out["cluster"]["clusterArn"] == f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/fromenv"
    out = w.aws("ecs", "list-clusters", env=env)
    assert out["clusterArns"] == [f"arn:aws:ecs:us-east-1:{ACCOUNT}:cluster/fromenv"]

    # The fixed test key is not accepted by this server.
    bad = w.aws_run("ecs", "list-clusters", env={**env, "AWS_ACCESS_KEY_ID": "test",
                                                 "AWS_SECRET_ACCESS_KEY": "testsecret"})
    assert bad.returncode == cli_service_error_exit_code(), (bad.returncode, bad.stderr)
    assert "UnrecognizedClientException" in bad.stderr


def test_cli_error_exit_code(wharf):
    res = wharf.aws_run("ecs", "list-tasks", "--cluster", "missing")
    assert res.returncode == cli_service_error_exit_code(), (res.returncode, res.stdout, res.stderr)
    assert "ClusterNotFoundException" in res.stderr, res.stderr
    res = wharf.aws_run("ecs", "run-task", "--cluster", "default", "--task-definition", "x",
                        "--count", "11")
    assert res.returncode == cli_service_error_exit_code(), (res.returncode, res.stdout, res.stderr)
    assert "InvalidParameterException" in res.stderr or "ClusterNotFoundException" in res.stderr, res.stderr
