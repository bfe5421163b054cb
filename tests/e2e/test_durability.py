"""Acknowledged writes survive SIGKILL; SIGTERM is a clean shutdown; keys persist."""

import signal
import threading
import time

from botocore.exceptions import ClientError

THREADS = 8
KILL_AFTER_S = 1.5


def test_acknowledged_writes_survive_sigkill(wharf_factory):
    w = wharf_factory().start()
    clients = [w.client(read_timeout=5) for _ in range(THREADS)]
    acked_clusters: list[list[str]] = [[] for _ in range(THREADS)]
    acked_revisions: list[list[tuple[str, int]]] = [[] for _ in range(THREADS)]
    errors_before_kill: list[str] = []
    killed = threading.Event()

    def writer(i: int):
        c = clients[i]
        n = 0
        while not killed.is_set():
            n += 1
            name = f"burst-{i}-{n}"
            try:
                out = c.create_cluster(clusterName=name)
                assert out["cluster"]["clusterName"] == name
                acked_clusters[i].append(name)
                # Half the threads share a family so revisions are contended.
                family = "shared" if i % 2 == 0 else f"own-{i}"
                out = c.register_task_definition(
                    family=family,
                    containerDefinitions=[{"name": "c", "image": "busybox", "memory": 8,
                                           "environment": [{"name": "N", "value": name}]}])
                td = out["taskDefinition"]
                acked_revisions[i].append((td["taskDefinitionArn"], name))
            except Exception as e:  # connection reset, timeouts once the server is gone
                if not killed.is_set():
                    errors_before_kill.append(f"{name}: {e!r}")
                return

    threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(THREADS)]
    for t in threads:
        t.start()
    time.sleep(KILL_AFTER_S)
    w.proc.send_signal(signal.SIGKILL)
    killed.set()
    w.proc.wait(timeout=10)
    assert w.proc.returncode == -signal.SIGKILL
    for t in threads:
        t.join(timeout=15)
        assert not t.is_alive(), "a writer thread hung after the server was killed"
    assert not errors_before_kill, errors_before_kill[:5]

    clusters = [n for per in acked_clusters for n in per]
    revisions = [r for per in acked_revisions for r in per]
    assert len(clusters) >= THREADS, f"too few writes were acknowledged: {len(clusters)}"
    arns = [arn for arn, _ in revisions]
    assert len(arns) == len(set(arns)), "one revision was acknowledged to two writers"

    # Restart on the same data dir and port, with no key on the command line: the key
    # given on the first start must have been kept.
    w.start(pass_root_key=False)
    c = w.client()
    for start in range(0, len(clusters), 100):
        batch = clusters[start:start + 100]
        out = c.describe_clusters(clusters=batch)
        assert out["failures"] == [], out["failures"][:5]
        assert sorted(x["clusterName"] for x in out["clusters"]) == sorted(batch)
        assert {x["status"] for x in out["clusters"]} == {"ACTIVE"}
    for arn, name in revisions:
        td = c.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        assert td["taskDefinitionArn"] == arn
        assert td["status"] == "ACTIVE"
        assert td["containerDefinitions"][0]["environment"] == [{"name": "N", "value": name}]
    # Writes still work after recovery, and revision numbers continue past the old ones.
    shared = [int(a.rsplit(":", 1)[1]) for a in arns if "/shared:" in a]
    out = c.register_task_definition(
        family="shared", containerDefinitions=[{"name": "c", "image": "busybox", "memory": 8}])
    assert out["taskDefinition"]["revision"] > max(shared, default=0)
    print(f"\n{len(clusters)} clusters and {len(revisions)} revisions acknowledged before SIGKILL")


def test_sigterm_restart_keeps_state(wharf_factory):
    w = wharf_factory(root_key=None).start()
    creds_before = w.credentials_file.read_text()
    key_id = creds_before.split("aws_access_key_id = ")[1].split()[0]
    secret = creds_before.split("aws_secret_access_key = ")[1].split()[0]
    w.root_key = (key_id, secret)
    c = w.client()
    c.create_cluster(clusterName="kept", tags=[{"key": "k", "value": "v"}])
    c.register_task_definition(
        family="kept", containerDefinitions=[{"name": "c", "image": "busybox", "memory": 8}])
    c.register_task_definition(
        family="kept", containerDefinitions=[{"name": "c", "image": "busybox", "memory": 16}])
    c.deregister_task_definition(taskDefinition="kept:1")
    c.create_cluster(clusterName="gone")
    c.delete_cluster(cluster="gone")
    # The client keeps an idle keep-alive connection open across the SIGTERM: graceful
    # shutdown must not wait for it forever.
    started = time.monotonic()
    assert w.stop() == 0, w.log()
    assert time.monotonic() - started < 5, "SIGTERM shutdown took too long"

    w.start(pass_root_key=False)
    assert w.credentials_file.read_text() == creds_before, "generated key changed on restart"
    c = w.client()
    out = c.describe_clusters(clusters=["kept", "gone"], include=["TAGS"])
    by_name = {x["clusterName"]: x for x in out["clusters"]}
    assert by_name["kept"]["status"] == "ACTIVE"
    assert by_name["kept"]["tags"] == [{"key": "k", "value": "v"}]
    assert by_name.get("gone", {"status": "INACTIVE"})["status"] == "INACTIVE"
    assert c.list_clusters()["clusterArns"] == [
        "arn:aws:ecs:us-east-1:000000000000:cluster/kept"]
    assert c.describe_task_definition(taskDefinition="kept:1")["taskDefinition"]["status"] == "INACTIVE"
    assert c.describe_task_definition(taskDefinition="kept")["taskDefinition"]["revision"] == 2
    assert c.list_task_definitions(status="ACTIVE")["taskDefinitionArns"] == [
        "arn:aws:ecs:us-east-1:000000000000:task-definition/kept:2"]
    # Old credentials from before the restart still work; a wrong secret still does not.
    try:
        w.client(secret="x").list_clusters()
        raise AssertionError("a wrong secret was accepted after restart")
    except ClientError as e:
        assert e.response["Error"]["Code"] == "InvalidSignatureException"
