"""The ELBv2 API end to end: `wharf up` driven by the real AWS CLI and boto3.

Every call goes over the wire in the query protocol (form in, XML out), so these tests
prove that botocore's parsers read Wharf's answers (including its errors, which must
raise the modelled exception classes) as well as the behaviour behind them.
"""

import http.server
import json
import socket
import subprocess
import threading
import time

import botocore.exceptions
import pytest

from conftest import cli_service_error_exit_code

ACCOUNT = "000000000000"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_error(wharf, *args) -> str:
    """Runs an AWS CLI command that must fail with a service error; returns stderr."""
    res = wharf.aws_run(*args, "--output", "json")
    assert res.returncode == cli_service_error_exit_code(), (
        f"aws {' '.join(args)} exited {res.returncode}\nstdout: {res.stdout}\n"
        f"stderr: {res.stderr}")
    return res.stderr


def test_cli_load_balancer_target_group_listener_and_rules(wharf):
    out = wharf.aws("elbv2", "create-load-balancer", "--name", "web",
                    "--subnets", "subnet-a", "subnet-b", "--security-groups", "sg-1",
                    "--tags", "Key=team,Value=core")
    [lb] = out["LoadBalancers"]
    lb_arn = lb["LoadBalancerArn"]
    assert lb_arn.startswith(
        f"arn:aws:elasticloadbalancing:us-east-1:{ACCOUNT}:loadbalancer/app/web/")
    lb_id = lb_arn.rsplit("/", 1)[1]
    assert lb["DNSName"] == f"web-{lb_id}.us-east-1.elb.localhost"
    assert lb["State"]["Code"] == "active"
    assert lb["Type"] == "application"
    assert [z["SubnetId"] for z in lb["AvailabilityZones"]] == ["subnet-a", "subnet-b"]
    assert lb["SecurityGroups"] == ["sg-1"]

    out = wharf.aws("elbv2", "create-target-group", "--name", "web", "--protocol", "HTTP",
                    "--port", "8080", "--vpc-id", "vpc-1", "--target-type", "ip",
                    "--health-check-path", "/health", "--health-check-interval-seconds", "5",
                    "--health-check-timeout-seconds", "2", "--healthy-threshold-count", "2",
                    "--matcher", "HttpCode=200-299")
    [tg] = out["TargetGroups"]
    tg_arn = tg["TargetGroupArn"]
    assert tg["HealthCheckPath"] == "/health"
    assert tg["HealthCheckIntervalSeconds"] == 5
    assert tg["UnhealthyThresholdCount"] == 2  # ELBv2's default
    assert tg["Matcher"] == {"HttpCode": "200-299"}
    assert tg["LoadBalancerArns"] == []

    port = free_port()
    out = wharf.aws("elbv2", "create-listener", "--load-balancer-arn", lb_arn,
                    "--protocol", "HTTP", "--port", str(port),
                    "--default-actions", f"Type=forward,TargetGroupArn={tg_arn}")
    [listener] = out["Listeners"]
    listener_arn = listener["ListenerArn"]
    assert listener["Port"] == port
    assert listener["DefaultActions"][0]["TargetGroupArn"] == tg_arn

    out = wharf.aws("elbv2", "describe-target-groups", "--load-balancer-arn", lb_arn)
    assert [t["TargetGroupArn"] for t in out["TargetGroups"]] == [tg_arn]
    assert out["TargetGroups"][0]["LoadBalancerArns"] == [lb_arn]

    stderr = cli_error(wharf, "elbv2", "create-listener", "--load-balancer-arn", lb_arn,
                       "--protocol", "HTTP", "--port", str(port), "--default-actions",
                       "Type=fixed-response,FixedResponseConfig={StatusCode=404}")
    assert "DuplicateListener" in stderr

    out = wharf.aws("elbv2", "create-rule", "--listener-arn", listener_arn,
                    "--priority", "10", "--conditions", "Field=path-pattern,Values=/api/*",
                    "--actions", f"Type=forward,TargetGroupArn={tg_arn}")
    rule_arn = out["Rules"][0]["RuleArn"]
    conditions = json.dumps([
        {"Field": "http-header",
         "HttpHeaderConfig": {"HttpHeaderName": "X-Canary", "Values": ["yes"]}},
        {"Field": "query-string",
         "QueryStringConfig": {"Values": [{"Key": "v", "Value": "2"}]}},
    ])
    out = wharf.aws("elbv2", "create-rule", "--listener-arn", listener_arn,
                    "--priority", "20", "--conditions", conditions, "--actions",
                    json.dumps([{"Type": "fixed-response", "FixedResponseConfig": {
                        "StatusCode": "418", "ContentType": "text/plain",
                        "MessageBody": "canary"}}]))
    assert out["Rules"][0]["Conditions"][1]["QueryStringConfig"]["Values"] == [
        {"Key": "v", "Value": "2"}]
    stderr = cli_error(wharf, "elbv2", "create-rule", "--listener-arn", listener_arn,
                       "--priority", "10", "--conditions", "Field=host-header,Values=a.test",
                       "--actions", f"Type=forward,TargetGroupArn={tg_arn}")
    assert "PriorityInUse" in stderr

    out = wharf.aws("elbv2", "describe-rules", "--listener-arn", listener_arn)
    assert [r["Priority"] for r in out["Rules"]] == ["10", "20", "default"]
    assert out["Rules"][-1]["IsDefault"] is True

    stderr = cli_error(wharf, "elbv2", "delete-target-group", "--target-group-arn", tg_arn)
    assert "ResourceInUse" in stderr
    stderr = cli_error(wharf, "elbv2", "describe-load-balancers", "--names", "missing")
    assert "LoadBalancerNotFound" in stderr
    stderr = cli_error(wharf, "elbv2", "create-target-group", "--name", "bad",
                       "--protocol", "HTTP", "--port", "80", "--matcher", "HttpCode=700")
    assert "ValidationError" in stderr

    out = wharf.aws("elbv2", "describe-tags", "--resource-arns", lb_arn)
    assert out["TagDescriptions"][0]["Tags"] == [{"Key": "team", "Value": "core"}]

    attrs = wharf.aws("elbv2", "modify-load-balancer-attributes", "--load-balancer-arn",
                      lb_arn, "--attributes", "Key=idle_timeout.timeout_seconds,Value=30")
    assert {"Key": "idle_timeout.timeout_seconds", "Value": "30"} in attrs["Attributes"]

    # Deleting the load balancer deletes its listener and rules, and frees the group.
    wharf.aws("elbv2", "delete-load-balancer", "--load-balancer-arn", lb_arn)
    stderr = cli_error(wharf, "elbv2", "describe-rules", "--rule-arns", rule_arn)
    assert "RuleNotFound" in stderr
    out = wharf.aws("elbv2", "describe-target-groups", "--target-group-arns", tg_arn)
    assert out["TargetGroups"][0]["LoadBalancerArns"] == []
    wharf.aws("elbv2", "delete-target-group", "--target-group-arn", tg_arn)


def test_cli_targets_drain_and_leave(wharf):
    out = wharf.aws("elbv2", "create-target-group", "--name", "drain", "--protocol", "HTTP",
                    "--port", "8080", "--target-type", "ip")
    tg_arn = out["TargetGroups"][0]["TargetGroupArn"]
    wharf.aws("elbv2", "modify-target-group-attributes", "--target-group-arn", tg_arn,
              "--attributes", "Key=deregistration_delay.timeout_seconds,Value=4")
    wharf.aws("elbv2", "register-targets", "--target-group-arn", tg_arn,
              "--targets", "Id=127.0.0.1,Port=9001", "Id=127.0.0.1,Port=9002")
    out = wharf.aws("elbv2", "describe-target-health", "--target-group-arn", tg_arn)
    states = {(d["Target"]["Port"], d["TargetHealth"]["State"], d["TargetHealth"]["Reason"])
              for d in out["TargetHealthDescriptions"]}
    assert states == {(9001, "unused", "Target.NotInUse"), (9002, "unused", "Target.NotInUse")}

    stderr = cli_error(wharf, "elbv2", "register-targets", "--target-group-arn", tg_arn,
                       "--targets", "Id=i-0123456789abcdef0")
    assert "InvalidTarget" in stderr

    # Deregistered with boto3, so that the draining state is read well within the
    # four-second delay (an AWS CLI start can take longer than that on a busy machine).
    elbv2 = wharf.client("elbv2")
    elbv2.deregister_targets(TargetGroupArn=tg_arn, Targets=[{"Id": "127.0.0.1", "Port": 9001}])
    [d] = elbv2.describe_target_health(
        TargetGroupArn=tg_arn,
        Targets=[{"Id": "127.0.0.1", "Port": 9001}])["TargetHealthDescriptions"]
    assert d["TargetHealth"]["State"] == "draining"
    assert d["TargetHealth"]["Reason"] == "Target.DeregistrationInProgress"

    # The sweeper removes the target once its delay has passed.
    deadline = time.monotonic() + 20
    while True:
        out = wharf.aws("elbv2", "describe-target-health", "--target-group-arn", tg_arn)
        ports = [d["Target"]["Port"] for d in out["TargetHealthDescriptions"]]
        if ports == [9002]:
            break
        assert time.monotonic() < deadline, f"target 9001 never left: {ports}"
        time.sleep(0.2)


def test_boto3_waiters_and_exceptions(wharf):
    elbv2 = wharf.client("elbv2")
    lb = elbv2.create_load_balancer(Name="waited", Subnets=["subnet-1"])["LoadBalancers"][0]
    elbv2.get_waiter("load_balancer_available").wait(
        LoadBalancerArns=[lb["LoadBalancerArn"]], WaiterConfig={"Delay": 1, "MaxAttempts": 5})
    elbv2.get_waiter("load_balancer_exists").wait(
        Names=["waited"], WaiterConfig={"Delay": 1, "MaxAttempts": 5})

    tg = elbv2.create_target_group(Name="waited", Protocol="HTTP", Port=80, TargetType="ip",
                                   HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2,
                                   HealthyThresholdCount=2)["TargetGroups"][0]
    tg_arn = tg["TargetGroupArn"]
    elbv2.modify_target_group_attributes(TargetGroupArn=tg_arn, Attributes=[
        {"Key": "deregistration_delay.timeout_seconds", "Value": "1"}])
    attrs = {a["Key"]: a["Value"] for a in
             elbv2.describe_target_group_attributes(TargetGroupArn=tg_arn)["Attributes"]}
    assert attrs["deregistration_delay.timeout_seconds"] == "1"
    assert attrs["load_balancing.algorithm.type"] == "round_robin"

    target = {"Id": "127.0.0.1", "Port": 9100}
    elbv2.register_targets(TargetGroupArn=tg_arn, Targets=[target])
    elbv2.deregister_targets(TargetGroupArn=tg_arn, Targets=[target])
    elbv2.get_waiter("target_deregistered").wait(
        TargetGroupArn=tg_arn, Targets=[target], WaiterConfig={"Delay": 1, "MaxAttempts": 15})
    [d] = elbv2.describe_target_health(TargetGroupArn=tg_arn,
                                       Targets=[target])["TargetHealthDescriptions"]
    assert d["TargetHealth"]["Reason"] == "Target.NotRegistered"

    with pytest.raises(elbv2.exceptions.TargetGroupNotFoundException):
        elbv2.describe_target_groups(Names=["nope"])
    with pytest.raises(elbv2.exceptions.DuplicateLoadBalancerNameException):
        elbv2.create_load_balancer(Name="waited", Scheme="internal")
    with pytest.raises(elbv2.exceptions.InvalidTargetException):
        elbv2.register_targets(TargetGroupArn=tg_arn, Targets=[{"Id": "not-an-ip"}])
    with pytest.raises(botocore.exceptions.ClientError) as e:
        elbv2.create_target_group(Name="x", Protocol="HTTP", Port=80,
                                  HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=10)
    assert e.value.response["Error"]["Code"] == "ValidationError"

    # Paging with the botocore paginator (Marker/NextMarker).
    for i in range(3):
        elbv2.create_load_balancer(Name=f"paged-{i}")
    pages = list(elbv2.get_paginator("describe_load_balancers").paginate(
        PaginationConfig={"PageSize": 2}))
    names = [lb["LoadBalancerName"] for p in pages for lb in p["LoadBalancers"]]
    assert names == ["paged-0", "paged-1", "paged-2", "waited"]
    assert len(pages) == 2


class _Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_target_in_service_waiter_with_a_real_target(wharf):
    """A registered target behind a listener becomes healthy once the data plane in
    `wharf up` has checked it, and botocore's target_in_service waiter sees that."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        elbv2 = wharf.client("elbv2")
        lb_arn = elbv2.create_load_balancer(Name="live")["LoadBalancers"][0]["LoadBalancerArn"]
        tg_arn = elbv2.create_target_group(
            Name="live", Protocol="HTTP", Port=server.server_port, TargetType="ip",
            HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2,
            HealthyThresholdCount=2)["TargetGroups"][0]["TargetGroupArn"]
        elbv2.create_listener(LoadBalancerArn=lb_arn, Protocol="HTTP", Port=free_port(),
                              DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])
        target = {"Id": "127.0.0.1", "Port": server.server_port}
        elbv2.register_targets(TargetGroupArn=tg_arn, Targets=[target])
        elbv2.get_waiter("target_in_service").wait(
            TargetGroupArn=tg_arn, Targets=[target],
            WaiterConfig={"Delay": 1, "MaxAttempts": 40})
    finally:
        server.shutdown()


def test_acknowledged_writes_survive_sigkill(wharf_factory):
    w = wharf_factory().start()
    lb_arn = w.aws("elbv2", "create-load-balancer", "--name", "durable")[
        "LoadBalancers"][0]["LoadBalancerArn"]
    tg_arn = w.aws("elbv2", "create-target-group", "--name", "durable", "--protocol", "HTTP",
                   "--port", "80", "--target-type", "ip")["TargetGroups"][0]["TargetGroupArn"]
    port = free_port()
    w.aws("elbv2", "create-listener", "--load-balancer-arn", lb_arn, "--protocol", "HTTP",
          "--port", str(port), "--default-actions", f"Type=forward,TargetGroupArn={tg_arn}")
    w.aws("elbv2", "register-targets", "--target-group-arn", tg_arn,
          "--targets", "Id=127.0.0.1,Port=9200")
    w.kill()
    w.start()
    out = w.aws("elbv2", "describe-target-groups", "--names", "durable")
    assert out["TargetGroups"][0]["LoadBalancerArns"] == [lb_arn]
    out = w.aws("elbv2", "describe-listeners", "--load-balancer-arn", lb_arn)
    assert [l["Port"] for l in out["Listeners"]] == [port]
    out = w.aws("elbv2", "describe-target-health", "--target-group-arn", tg_arn)
    assert [d["Target"]["Port"] for d in out["TargetHealthDescriptions"]] == [9200]


def test_wharf_server_serves_elbv2_too(wharf_factory):
    w = wharf_factory(command="server").start()
    elbv2 = w.client("elbv2")
    tg = elbv2.create_target_group(Name="ctl", Protocol="HTTP", Port=80,
                                   TargetType="ip")["TargetGroups"][0]
    assert tg["HealthCheckTimeoutSeconds"] == 5
    assert [t["TargetGroupName"] for t in
            elbv2.describe_target_groups()["TargetGroups"]] == ["ctl"]
