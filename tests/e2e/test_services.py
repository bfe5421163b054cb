"""ECS services on `wharf up` with its real local agent and real containers: the service
controller replaces a killed container, scales up and down, rolls to a new revision (boto3's
services_stable waiter), and its circuit breaker rolls a crashing revision back.

Containers are found and removed by the label naming the agent's container instance (the
`node` and `cleanup` fixtures of test_agent), even when a test fails.
"""

import time

from test_agent import (  # noqa: F401  (fixtures are used by name)
    INSTANCE_LABEL,
    TASK_LABEL,
    cleanup,
    containers_by_label,
    docker,
    node,
    register,
    sh,
    wait_for,
)

STABLE = {"Delay": 1, "MaxAttempts": 90}
HTTPD = sh("mkdir -p /www && echo \"$GREETING\" > /www/index.html && "
           "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait")


def web_td(ecs, greeting: str) -> str:
    return register(
        ecs, "web",
        {"name": "web", "command": HTTPD,
         "environment": [{"name": "GREETING", "value": greeting}],
         "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}]},
    )


def service(ecs, name: str = "web") -> dict:
    [svc] = ecs.describe_services(cluster="default", services=[name])["services"]
    return svc


def messages(svc: dict) -> list[str]:
    return [e["message"] for e in svc["events"]]


def service_tasks(ecs, name: str = "web") -> list[dict]:
    arns = ecs.list_tasks(cluster="default", serviceName=name)["taskArns"]
    if not arns:
        return []
    return ecs.describe_tasks(cluster="default", tasks=arns)["tasks"]


def running_containers(instance: str) -> list[str]:
    return containers_by_label(INSTANCE_LABEL, instance, running_only=True)


def wait_stable(ecs, name: str = "web") -> dict:
    ecs.get_waiter("services_stable").wait(cluster="default", services=[name],
                                           WaiterConfig=STABLE)
    return service(ecs, name)


def wait_completed(ecs, name: str = "web") -> dict:
    """services_stable only counts RUNNING tasks; a deployment completes once its tasks
    also proved healthy (here: stayed RUNNING a few seconds)."""
    wait_stable(ecs, name)
    return wait_for("the deployment to complete",
                    lambda: (s := service(ecs, name))["deployments"][0]["rolloutState"]
                    == "COMPLETED" and s, 30)


def test_service_replaces_scales_and_rolls(node):
    w, ecs, instance = node
    v1 = web_td(ecs, "one")
    created = ecs.create_service(cluster="default", serviceName="web", taskDefinition=v1,
                                 desiredCount=2, enableECSManagedTags=True)["service"]
    assert created["status"] == "ACTIVE"
    assert created["deployments"][0]["rolloutState"] == "IN_PROGRESS"

    svc = wait_completed(ecs)
    assert svc["runningCount"] == 2
    assert any(m.startswith("(service web) has started 2 tasks: (task ") for m in messages(svc))
    assert "(service web) has reached a steady state." in messages(svc)
    tasks = service_tasks(ecs)
    assert len(tasks) == 2
    assert {t["group"] for t in tasks} == {"service:web"}
    assert len(running_containers(instance)) == 2
    # ECS managed tags name the task's cluster and service.
    for task in tasks:
        tags = ecs.list_tags_for_resource(resourceArn=task["taskArn"])["tags"]
        assert {"key": "aws:ecs:clusterName", "value": "default"} in tags
        assert {"key": "aws:ecs:serviceName", "value": "web"} in tags

    # Kill one task's container: the task stops and the controller replaces it.
    victim = tasks[0]["taskArn"]
    [cid] = containers_by_label(TASK_LABEL, victim, running_only=True)
    docker("kill", cid)

    def replaced():
        current = [t for t in service_tasks(ecs) if t["lastStatus"] == "RUNNING"]
        arns = {t["taskArn"] for t in current}
        return len(arns) == 2 and victim not in arns and current

    wait_for("the killed task to be replaced", replaced, 60)
    [stopped] = ecs.describe_tasks(cluster="default", tasks=[victim])["tasks"]
    assert stopped["lastStatus"] == "STOPPED"
    wait_stable(ecs)

    # Scale up, then down.
    ecs.update_service(cluster="default", service="web", desiredCount=3)
    svc = wait_stable(ecs)
    assert svc["runningCount"] == 3
    wait_for("three containers", lambda: len(running_containers(instance)) == 3, 30)
    before = {t["taskArn"] for t in service_tasks(ecs)}
    ecs.update_service(cluster="default", service="web", desiredCount=1)
    svc = wait_stable(ecs)
    assert svc["runningCount"] == 1
    # The waiter passes only once the tasks let go have really stopped.
    let_go = before - {t["taskArn"] for t in service_tasks(ecs)}
    assert len(let_go) == 2
    described = ecs.describe_tasks(cluster="default", tasks=sorted(let_go))["tasks"]
    assert [t["lastStatus"] for t in described] == ["STOPPED", "STOPPED"]
    assert any("has stopped 2 running tasks" in m for m in messages(svc))
    wait_for("one container left", lambda: len(running_containers(instance)) == 1, 30)

    # Roll to a new revision.
    ecs.update_service(cluster="default", service="web", desiredCount=2)
    wait_stable(ecs)
    v2 = web_td(ecs, "two")
    out = ecs.update_service(cluster="default", service="web", taskDefinition=v2)["service"]
    assert [d["status"] for d in out["deployments"]] == ["PRIMARY", "ACTIVE"]
    new_id = out["deployments"][0]["id"]
    svc = wait_completed(ecs)
    assert svc["taskDefinition"] == v2
    assert [d["id"] for d in svc["deployments"]] == [new_id]
    assert f"(service web) (deployment {new_id}) deployment completed." in messages(svc)
    tasks = [t for t in service_tasks(ecs) if t["lastStatus"] == "RUNNING"]
    assert len(tasks) == 2
    assert {t["taskDefinitionArn"] for t in tasks} == {v2}
    assert {t["startedBy"] for t in tasks} == {new_id}
    wait_for("only the new revision's containers",
             lambda: len(running_containers(instance)) == 2, 30)

    # Delete: scaled to 0 first (ECS refuses otherwise), then DRAINING, then INACTIVE.
    try:
        ecs.delete_service(cluster="default", service="web")
        raise AssertionError("deleting a service scaled above 0 must fail")
    except ecs.exceptions.InvalidParameterException:
        pass
    ecs.update_service(cluster="default", service="web", desiredCount=0)
    assert ecs.delete_service(cluster="default", service="web")["service"]["status"] == "DRAINING"
    wait_for("the service to become INACTIVE",
             lambda: service(ecs)["status"] == "INACTIVE", 60)
    wait_for("no container left", lambda: not running_containers(instance), 30)
    assert ecs.list_services(cluster="default")["serviceArns"] == []


def test_circuit_breaker_rolls_back_a_crashing_revision(node):
    w, ecs, instance = node
    v1 = web_td(ecs, "good")
    ecs.create_service(
        cluster="default", serviceName="web", taskDefinition=v1, desiredCount=1,
        deploymentConfiguration={
            "deploymentCircuitBreaker": {"enable": True, "rollback": True},
            "maximumPercent": 200, "minimumHealthyPercent": 100,
        })
    svc = wait_completed(ecs)
    good_id = svc["deployments"][0]["id"]
    [good_task] = [t["taskArn"] for t in service_tasks(ecs)]

    bad = register(ecs, "web", {"name": "web", "command": sh("exit 1")})
    started = time.monotonic()
    out = ecs.update_service(cluster="default", service="web", taskDefinition=bad)["service"]
    bad_id = out["deployments"][0]["id"]

    def rolled_back():
        s = service(ecs)
        return f"(service web) rolling back to deployment {good_id}." in messages(s) and s

    svc = wait_for("the circuit breaker to roll back", rolled_back, 90, interval=1)
    assert (f"(service web) (deployment {bad_id}) deployment failed: tasks failed to start."
            in messages(svc))
    assert svc["taskDefinition"] == v1
    assert svc["deployments"][0]["id"] == good_id
    svc = wait_stable(ecs)
    assert svc["taskDefinition"] == v1
    assert [d["id"] for d in svc["deployments"]] == [good_id]
    # The good task served throughout: it was never stopped.
    running = [t["taskArn"] for t in service_tasks(ecs) if t["lastStatus"] == "RUNNING"]
    assert running == [good_task]
    # At least three crashed tasks of the bad revision (the breaker's minimum).
    stopped = ecs.list_tasks(cluster="default", serviceName="web",
                             desiredStatus="STOPPED")["taskArns"]
    crashed = [t for t in ecs.describe_tasks(cluster="default", tasks=stopped)["tasks"]
               if t["taskDefinitionArn"] == bad]
    assert len(crashed) >= 3
    assert all(c["containers"][0].get("exitCode") == 1 for c in crashed)
    print(f"circuit breaker rolled back after {time.monotonic() - started:.1f}s")
    ecs.update_service(cluster="default", service="web", desiredCount=0)
    ecs.delete_service(cluster="default", service="web")


def _get(port: int) -> tuple[int, str]:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as res:
            return res.status, res.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_rolling_a_load_balanced_service_fails_no_request(node):
    """The issue's scenario: a load balancer, a target group and a listener, a service
    behind them, and `update-service --task-definition web:2` while requests keep
    flowing: every request succeeds, and the answers move from revision 1 to 2."""
    import socket
    import threading

    w, ecs, instance = node
    elb = w.client("elbv2")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lb = elb.create_load_balancer(Name="front", Subnets=["subnet-1", "subnet-2"])[
        "LoadBalancers"][0]
    tg = elb.create_target_group(
        Name="web", Protocol="HTTP", Port=80, VpcId="vpc-1", TargetType="instance",
        HealthCheckPath="/", HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2,
        HealthyThresholdCount=2, UnhealthyThresholdCount=2)["TargetGroups"][0]
    tg_arn = tg["TargetGroupArn"]
    elb.modify_target_group_attributes(
        TargetGroupArn=tg_arn,
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "2"}])
    elb.create_listener(LoadBalancerArn=lb["LoadBalancerArn"], Protocol="HTTP", Port=port,
                        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])

    v1 = web_td(ecs, "one")
    ecs.create_service(
        cluster="default", serviceName="web", taskDefinition=v1, desiredCount=2,
        loadBalancers=[{"targetGroupArn": tg_arn, "containerName": "web",
                        "containerPort": 8080}])
    svc = wait_completed(ecs)
    assert f"(service web) registered 2 targets in (target-group {tg_arn})" in messages(svc) \
        or sum(m.startswith("(service web) registered 1 targets") for m in messages(svc)) == 2
    health = elb.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
    assert len(health) == 2
    assert {h["TargetHealth"]["State"] for h in health} == {"healthy"}
    host_ports = {t["containers"][0]["networkBindings"][0]["hostPort"]
                  for t in service_tasks(ecs)}
    assert {h["Target"]["Port"] for h in health} == host_ports
    assert wait_for("the listener to answer",
                    lambda: _get(port) == (200, "one\n"), 30)

    results: list[tuple[int, str]] = []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                results.append(_get(port))
            except Exception as e:  # a refused or reset connection is a failed request
                results.append((0, repr(e)))
            time.sleep(0.02)

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        v2 = web_td(ecs, "two")
        ecs.update_service(cluster="default", service="web", taskDefinition=v2)
        svc = wait_completed(ecs)
        assert svc["taskDefinition"] == v2
        # Let the old targets' draining end and a few requests land on the new ones.
        time.sleep(3)
    finally:
        stop.set()
        thread.join(10)
    print(f"{len(results)} requests through the listener during the rolling update")
    failed = [r for r in results if r[0] != 200]
    bodies = [r[1] for r in results if r[0] == 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed: {failed[:5]}"
    assert "one\n" in bodies and bodies[-1] == "two\n", (bodies[:3], bodies[-3:])
    all_messages = messages(service(ecs))
    assert any("has begun draining connections on" in m for m in all_messages)
    assert any(m.startswith("(service web) deregistered") for m in all_messages)
    ecs.update_service(cluster="default", service="web", desiredCount=0)
    ecs.delete_service(cluster="default", service="web")
