"""State is regional: the SigV4 scope's region selects it."""


def test_cluster_is_regional(wharf):
    eu = wharf.client(region="eu-west-1")
    us = wharf.client(region="us-east-1")
    out = eu.create_cluster(clusterName="regional")
    assert out["cluster"]["clusterArn"] == "arn:aws:ecs:eu-west-1:000000000000:cluster/regional"
    assert eu.list_clusters()["clusterArns"] == [out["cluster"]["clusterArn"]]
    assert us.list_clusters()["clusterArns"] == []
    missing = us.describe_clusters(clusters=["regional"])
    assert missing["clusters"] == []
    assert missing["failures"][0]["reason"] == "MISSING"

    # The same name in another region is a different cluster.
    out = us.create_cluster(clusterName="regional")
    assert out["cluster"]["clusterArn"] == "arn:aws:ecs:us-east-1:000000000000:cluster/regional"
    us.delete_cluster(cluster="regional")
    assert eu.describe_clusters(clusters=["regional"])["clusters"][0]["status"] == "ACTIVE"

    eu.register_task_definition(
        family="euonly", containerDefinitions=[{"name": "c", "image": "busybox", "memory": 8}])
    assert us.list_task_definitions()["taskDefinitionArns"] == []


def test_cli_region_flag(wharf):
    wharf.aws("ecs", "create-cluster", "--cluster-name", "cli-eu", "--region", "eu-west-1")
    assert wharf.aws("ecs", "list-clusters")["clusterArns"] == []
    out = wharf.aws("ecs", "list-clusters", "--region", "eu-west-1")
    assert out["clusterArns"] == ["arn:aws:ecs:eu-west-1:000000000000:cluster/cli-eu"]
