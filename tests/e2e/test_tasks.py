"""Tasks placed on a registered container instance, driven through their lifecycle as an
agent would, observed through boto3's waiters; and paginators."""

import json

FAST = {"Delay": 1, "MaxAttempts": 10}


def register_instance(ecs, cluster):
    doc = json.dumps({"instanceId": "i-0123456789abcdef0", "region": "us-east-1",
                      "availabilityZone": "us-east-1a", "accountId": "000000000000"})
    out = ecs.register_container_instance(
        cluster=cluster,
        instanceIdentityDocument=doc,
        totalResources=[
            {"name": "CPU", "type": "INTEGER", "integerValue": 2048},
            {"name": "MEMORY", "type": "INTEGER", "integerValue": 4096},
        ],
        attributes=[{"name": "ecs.availability-zone", "value": "us-east-1a"}],
    )
    return out["containerInstance"]


def test_task_lifecycle_with_waiters(ecs):
    ecs.create_cluster(clusterName="work")
    instance = register_instance(ecs, "work")
    assert instance["status"] == "ACTIVE"
    assert instance["agentConnected"] in (True, False)
    assert {r["name"]: r.get("integerValue") for r in instance["registeredResources"]}["CPU"] == 2048
    assert ecs.describe_clusters(clusters=["work"])["clusters"][0][
        "registeredContainerInstancesCount"] == 1

    ecs.register_task_definition(
        family="app",
        containerDefinitions=[{"name": "main", "image": "busybox", "memory": 256, "cpu": 256}])
    out = ecs.run_task(cluster="work", taskDefinition="app", count=3, startedBy="e2e")
    assert out["failures"] == []
    tasks = out["tasks"]
    assert len(tasks) == 3
    arns = [t["taskArn"] for t in tasks]
    assert len(set(arns)) == 3
    for t in tasks:
        assert t["taskArn"].startswith("arn:aws:ecs:us-east-1:000000000000:task/work/")
        assert t["containerInstanceArn"] == instance["containerInstanceArn"]
        assert t["desiredStatus"] == "RUNNING"
        assert t["lastStatus"] in ("PROVISIONING", "PENDING")
        assert t["taskDefinitionArn"].endswith("task-definition/app:1")
        assert t.get("startedBy") == "e2e"

    # Resources are accounted for on the instance: 3 x (256 CPU, 256 MiB) reserved.
    ci = ecs.describe_container_instances(
        cluster="work", containerInstances=[instance["containerInstanceArn"]])["containerInstances"][0]
    remaining = {r["name"]: r.get("integerValue") for r in ci["remainingResources"]}
    assert remaining["CPU"] == 2048 - 3 * 256
    assert remaining["MEMORY"] == 4096 - 3 * 256

    # Nothing runs until the "agent" says so.
    assert all(t["lastStatus"] != "RUNNING"
               for t in ecs.describe_tasks(cluster="work", tasks=arns)["tasks"])

    for arn in arns:
        ack = ecs.submit_task_state_change(
            cluster="work", task=arn, status="RUNNING",
            containers=[{"containerName": "main", "status": "RUNNING", "runtimeId": "c" * 12}])
        assert ack["acknowledgment"] == "ACK"
    ecs.get_waiter("tasks_running").wait(cluster="work", tasks=arns, WaiterConfig=FAST)
    described = ecs.describe_tasks(cluster="work", tasks=arns)["tasks"]
    assert {t["lastStatus"] for t in described} == {"RUNNING"}
    assert all(t.get("startedAt") for t in described)
    assert ecs.describe_clusters(clusters=["work"])["clusters"][0]["runningTasksCount"] == 3
    assert sorted(ecs.list_tasks(cluster="work")["taskArns"]) == sorted(arns)

    for arn in arns:
        stopped = ecs.stop_task(cluster="work", task=arn, reason="e2e says stop")["task"]
        assert stopped["desiredStatus"] == "STOPPED"
    for arn in arns:
        ecs.submit_task_state_change(
            cluster="work", task=arn, status="STOPPED",
            containers=[{"containerName": "main", "status": "STOPPED", "exitCode": 143}])
    ecs.get_waiter("tasks_stopped").wait(cluster="work", tasks=arns, WaiterConfig=FAST)
    described = ecs.describe_tasks(cluster="work", tasks=arns)["tasks"]
    for t in described:
        assert t["lastStatus"] == "STOPPED"
        assert t["stopCode"] == "UserInitiated"
        assert t["stoppedReason"] == "e2e says stop"
        assert t.get("stoppedAt")
        assert t["containers"][0].get("exitCode") == 143

    assert ecs.list_tasks(cluster="work")["taskArns"] == []
    assert sorted(ecs.list_tasks(cluster="work", desiredStatus="STOPPED")["taskArns"]) == sorted(arns)
    ci = ecs.describe_container_instances(
        cluster="work", containerInstances=[instance["containerInstanceArn"]])["containerInstances"][0]
    remaining = {r["name"]: r.get("integerValue") for r in ci["remainingResources"]}
    assert remaining["CPU"] == 2048


def test_task_that_exits_on_its_own(ecs):
    ecs.create_cluster(clusterName="w2")
    register_instance(ecs, "w2")
    ecs.register_task_definition(
        family="job", containerDefinitions=[{"name": "main", "image": "busybox", "memory": 64}])
    [task] = ecs.run_task(cluster="w2", taskDefinition="job")["tasks"]
    arn = task["taskArn"]
    ecs.submit_task_state_change(cluster="w2", task=arn, status="RUNNING")
    ecs.submit_task_state_change(cluster="w2", task=arn, status="STOPPED",
                                 containers=[{"containerName": "main", "status": "STOPPED",
                                              "exitCode": 1}])
    ecs.get_waiter("tasks_stopped").wait(cluster="w2", tasks=[arn], WaiterConfig=FAST)
    [t] = ecs.describe_tasks(cluster="w2", tasks=[arn])["tasks"]
    assert t["stopCode"] == "EssentialContainerExited"
    assert t["desiredStatus"] == "STOPPED"
    # A late, retried RUNNING report is acknowledged and ignored.
    ecs.submit_task_state_change(cluster="w2", task=arn, status="RUNNING")
    [t] = ecs.describe_tasks(cluster="w2", tasks=[arn])["tasks"]
    assert t["lastStatus"] == "STOPPED"


def test_run_task_without_capacity(ecs):
    ecs.create_cluster(clusterName="empty")
    ecs.register_task_definition(
        family="x", containerDefinitions=[{"name": "c", "image": "busybox", "memory": 64}])
    out = ecs.run_task(cluster="empty", taskDefinition="x", count=2)
    assert out["tasks"] == []
    assert out["failures"], out


def test_paginate_task_definitions(ecs):
    for _ in range(25):
        ecs.register_task_definition(
            family="paged", containerDefinitions=[{"name": "c", "image": "busybox", "memory": 8}])
    pages = list(ecs.get_paginator("list_task_definitions").paginate(
        familyPrefix="paged", PaginationConfig={"PageSize": 10}))
    assert [len(p["taskDefinitionArns"]) for p in pages] == [10, 10, 5]
    arns = [a for p in pages for a in p["taskDefinitionArns"]]
    assert arns == [f"arn:aws:ecs:us-east-1:000000000000:task-definition/paged:{i}"
                    for i in range(1, 26)]
    assert "nextToken" not in pages[-1]

    desc = [a for p in ecs.get_paginator("list_task_definitions").paginate(
        sort="DESC", PaginationConfig={"PageSize": 7}) for a in p["taskDefinitionArns"]]
    assert desc == list(reversed(arns))

    # MaxItems with a resume token continues where it left off.
    first = ecs.get_paginator("list_task_definitions").paginate(
        PaginationConfig={"PageSize": 4, "MaxItems": 6}).build_full_result()
    assert first["taskDefinitionArns"] == arns[:6]
    rest = ecs.get_paginator("list_task_definitions").paginate(
        PaginationConfig={"PageSize": 4, "StartingToken": first["NextToken"]}).build_full_result()
    assert first["taskDefinitionArns"] + rest["taskDefinitionArns"] == arns


def test_paginate_clusters(ecs):
    names = [f"c{i:02d}" for i in range(12)]
    for n in names:
        ecs.create_cluster(clusterName=n)
    got = [a.rsplit("/", 1)[1] for p in ecs.get_paginator("list_clusters").paginate(
        PaginationConfig={"PageSize": 5}) for a in p["clusterArns"]]
    assert sorted(got) == names
    assert len(got) == len(set(got))
