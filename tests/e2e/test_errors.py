"""Error classes as boto3 sees them: the `__type` of the JSON 1.1 error body."""

import pytest
from botocore.exceptions import ClientError


def error_code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_unknown_cluster(ecs):
    with pytest.raises(ecs.exceptions.ClusterNotFoundException) as e:
        ecs.list_tasks(cluster="nosuchcluster")
    assert error_code(e) == "ClusterNotFoundException"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert e.value.response["ResponseMetadata"]["RequestId"]

    with pytest.raises(ClientError) as e:
        ecs.describe_tasks(cluster="nosuchcluster", tasks=["0123456789abcdef"])
    assert error_code(e) == "ClusterNotFoundException"
    assert isinstance(e.value, ecs.exceptions.ClusterNotFoundException)


def test_invalid_task_definition(ecs):
    # Passes botocore's client-side validation (types, required members) but is not a
    # valid task definition: a container without an image, and a family with spaces.
    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(family="bad", containerDefinitions=[{"name": "c"}])
    assert error_code(e) == "ClientException", e.value.response
    assert isinstance(e.value, ecs.exceptions.ClientException)

    with pytest.raises(ClientError) as e:
        ecs.register_task_definition(
            family="has spaces",
            containerDefinitions=[{"name": "c", "image": "busybox", "memory": 64}])
    assert error_code(e) in ("ClientException", "InvalidParameterException"), e.value.response

    # Nothing was registered by the failed calls.
    assert ecs.list_task_definitions()["taskDefinitionArns"] == []


def test_run_task_count_out_of_range(ecs):
    ecs.create_cluster(clusterName="errs")
    ecs.register_task_definition(
        family="t", containerDefinitions=[{"name": "c", "image": "busybox", "memory": 64}])
    # count is an Integer in the model without a max, so botocore sends 11 as is.
    with pytest.raises(ClientError) as e:
        ecs.run_task(cluster="errs", taskDefinition="t", count=11)
    assert error_code(e) == "InvalidParameterException", e.value.response
    assert isinstance(e.value, ecs.exceptions.InvalidParameterException)
    assert ecs.list_tasks(cluster="errs")["taskArns"] == []

    with pytest.raises(ClientError) as e:
        ecs.run_task(cluster="errs", taskDefinition="nosuchfamily")
    assert error_code(e) in ("ClientException", "InvalidParameterException"), e.value.response


def test_unknown_task_definition_and_instance(ecs):
    with pytest.raises(ClientError) as e:
        ecs.describe_task_definition(taskDefinition="nosuch:1")
    assert error_code(e) == "ClientException", e.value.response
    ecs.create_cluster(clusterName="c1")
    out = ecs.describe_container_instances(cluster="c1", containerInstances=["abc"])
    assert out["containerInstances"] == []
    assert [f["reason"] for f in out["failures"]] == ["MISSING"]
