"""Pods as the pod runner runs them: exit codes and termination messages, env, volumes,
restart policy, logs — each checked through the API server, as the operator will see it."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from localcluster.testing import Cluster, wait_for

pytestmark = pytest.mark.e2e
SHELL_IMAGE = "busybox:1.36"


def shell(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": SHELL_IMAGE, "command": ["sh", "-c", script], **extra}


def pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "containers": containers, **spec}}


def terminated(pod_obj: dict[str, Any], container: str) -> dict[str, Any]:
    statuses = [*(pod_obj["status"].get("initContainerStatuses") or []),
                *pod_obj["status"]["containerStatuses"]]
    state: dict[str, Any] = next(s for s in statuses if s["name"] == container)["state"]
    assert "terminated" in state, state
    result: dict[str, Any] = state["terminated"]
    return result


def test_failing_command_fails_the_job_with_exit_code_and_message(
        cluster: Cluster, namespace: str) -> None:
    cluster.apply({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "breaks"},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
            shell("main", "echo working; printf 'disk on fire' > /dev/termination-log; exit 3"),
        ]}}},
    }, namespace)

    job = cluster.wait_job_finished(namespace, "breaks", timeout_seconds=60)

    failed = [c for c in job["status"]["conditions"] if c["type"] == "Failed"]
    assert failed and failed[0]["status"] == "True", job["status"]
    assert job["status"].get("failed") == 1
    pod_obj = cluster.job_pods(namespace, "breaks")[0]
    assert pod_obj["status"]["phase"] == "Failed"
    state = terminated(pod_obj, "main")
    assert state["exitCode"] == 3
    assert state["reason"] == "Error"
    assert state["message"] == "disk on fire"
    assert state["startedAt"] <= state["finishedAt"]
    assert cluster.container_log(namespace, pod_obj["metadata"]["name"]) == "working\n"


def test_custom_termination_path_and_fallback_to_logs(cluster: Cluster, namespace: str) -> None:
    cluster.apply(pod("messages", [
        shell("custom", "printf report > /tmp/harness/report.json",
              terminationMessagePath="/tmp/harness/report.json"),
        shell("fallback", "echo first; echo last words; exit 2",
              terminationMessagePolicy="FallbackToLogsOnError"),
    ]), namespace)

    done = cluster.wait_pod_phase(namespace, "messages")

    assert done["status"]["phase"] == "Failed"
    assert terminated(done, "custom") == {**terminated(done, "custom"), "exitCode": 0,
                                          "reason": "Completed", "message": "report"}
    fallback = terminated(done, "fallback")
    assert (fallback["exitCode"], fallback["message"]) == (2, "first\nlast words")


def test_env_from_secret_configmap_and_field_refs(cluster: Cluster, namespace: str) -> None:
    cluster.apply([
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
         "data": {"uri": base64.b64encode(b"postgresql://u:p@h/db").decode()}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
         "data": {"LEVEL": "debug", "MODE": "fast"}},
    ], namespace)
    env = [
        {"name": "URI", "valueFrom": {"secretKeyRef": {"name": "db", "key": "uri"}}},
        {"name": "MISSING", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "x",
                                                            "optional": True}}},
        {"name": "LEVEL_ONLY", "valueFrom": {"configMapKeyRef": {"name": "settings",
                                                                 "key": "LEVEL"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "GREETING", "value": "hello $(POD) in $(NS), $$(POD) stays"},
    ]
    script = ('echo "URI=$URI"; echo "MISSING=${MISSING-unset}"; echo "LEVEL_ONLY=$LEVEL_ONLY"; '
              'echo "CFG_MODE=$CFG_MODE"; echo "POD=$POD NS=$NS SA=$SA"; echo "IP=$IP"; '
              'echo "GREETING=$GREETING"; echo "K8S=$KUBERNETES_SERVICE_HOST"; '
              'echo "HOST=`hostname` $HOSTNAME"')
    cluster.apply(pod("envs", [shell("main", script, env=env, envFrom=[
        {"configMapRef": {"name": "settings"}, "prefix": "CFG_"}])]), namespace)

    done = cluster.wait_pod_phase(namespace, "envs")

    assert done["status"]["phase"] == "Succeeded"
    lines = cluster.container_log(namespace, "envs").splitlines()
    assert lines[:7] == [
        "URI=postgresql://u:p@h/db", "MISSING=unset", "LEVEL_ONLY=debug", "CFG_MODE=fast",
        f"POD=envs NS={namespace} SA=default", f"IP={done['status']['podIP']}",
        f"GREETING=hello envs in {namespace}, $(POD) stays",
    ]
    assert lines[7].startswith("K8S=") and lines[7] != "K8S="
    assert lines[8] == "HOST=envs envs"


def test_missing_secret_keeps_the_pod_waiting_until_it_appears(
        cluster: Cluster, namespace: str) -> None:
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]
    cluster.apply(pod("waits", [shell("main", 'echo "TOKEN=$TOKEN"', env=env)]), namespace)

    def waiting_reason() -> str | None:
        statuses = cluster.pod(namespace, "waits").get("status", {}).get("containerStatuses")
        waiting = (statuses or [{}])[0].get("state", {}).get("waiting", {})
        return waiting.get("reason") if waiting.get("reason") == "CreateContainerConfigError" \
            else None

    wait_for(waiting_reason, 30, "CreateContainerConfigError while the Secret is missing")
    assert cluster.pod(namespace, "waits")["status"]["phase"] == "Pending"
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "late"},
                   "stringData": {"token": "arrived"}}, namespace)
    done = cluster.wait_pod_phase(namespace, "waits", timeout_seconds=30)
    assert done["status"]["phase"] == "Succeeded"
    assert cluster.container_log(namespace, "waits") == "TOKEN=arrived\n"


def test_empty_dir_is_shared_by_init_and_concurrent_containers(
        cluster: Cluster, namespace: str) -> None:
    mount = [{"name": "work", "mountPath": "/work-area"}]
    cluster.apply(pod("shares", [
        shell("writer", "echo from-writer > /work-area/writer.txt; "
                        "while [ ! -f /work-area/reader.txt ]; do sleep 0.1; done",
              volumeMounts=mount),
        shell("reader", "while [ ! -f /elsewhere/area/writer.txt ]; do sleep 0.1; done; "
                        "cat /elsewhere/area/init.txt /elsewhere/area/writer.txt; "
                        "touch /elsewhere/area/reader.txt",
              volumeMounts=[{"name": "work", "mountPath": "/elsewhere/area"}]),
    ], initContainers=[shell("init", "echo from-init > /work-area/init.txt", volumeMounts=mount)],
        volumes=[{"name": "work", "emptyDir": {}}]), namespace)

    done = cluster.wait_pod_phase(namespace, "shares", timeout_seconds=30)

    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert cluster.container_log(namespace, "shares", "reader") == "from-init\nfrom-writer\n"
    assert terminated(done, "init")["exitCode"] == 0
    if cluster.local:  # the mount points lived only in the containers' mount namespaces
        assert not Path("/work-area").exists()
        assert not Path("/elsewhere").exists()
        assert not Path("/dev/termination-log").exists()


def test_secret_configmap_and_service_account_volumes(cluster: Cluster, namespace: str) -> None:
    cluster.apply([
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
         "stringData": {"user": "alice", "password": "s3cret"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "conf"},
         "data": {"app.yaml": "level: info\n"}},
    ], namespace)
    script = ("ls /etc/creds; cat /etc/creds/password; echo; stat -c %a /etc/creds/password; "
              "cat /etc/conf/nested/app.yaml; "
              "(echo nope > /etc/creds/new) 2>/dev/null && echo writable || echo read-only; "
              "SA=/var/run/secrets/kubernetes.io/serviceaccount; ls $SA; cat $SA/namespace; echo; "
              "cat $SA/ca.crt > /tmp/harness-ca-$(POD).crt; wc -c < $SA/token")
    cluster.apply(pod("mounts", [shell("main", script, env=[
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}],
        volumeMounts=[
            {"name": "creds", "mountPath": "/etc/creds", "readOnly": True},
            {"name": "conf", "mountPath": "/etc/conf"},
        ])], volumes=[
            {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400}},
            {"name": "conf", "configMap": {"name": "conf", "items": [
                {"key": "app.yaml", "path": "nested/app.yaml"}]}},
        ]), namespace)

    done = cluster.wait_pod_phase(namespace, "mounts", timeout_seconds=30)

    assert done["status"]["phase"] == "Succeeded", done["status"]
    lines = cluster.container_log(namespace, "mounts").splitlines()
    assert lines[:7] == ["password", "user", "s3cret", "400", "level: info", "read-only",
                         "ca.crt"]
    assert lines[7:9] == ["namespace", "token"]
    assert lines[9] == namespace
    assert int(lines[10]) > 100  # a JWT from the TokenRequest API
    if cluster.local:
        assert cluster.state is not None
        uid = done["metadata"]["uid"]
        copied = Path(f"/tmp/harness-ca-{uid}.crt")
        assert copied.read_text() == Path(cluster.state.ca_file).read_text()
        copied.unlink()


def test_restart_policy_on_failure_restarts_in_place(cluster: Cluster, namespace: str) -> None:
    script = ("if [ -f /scratch/second ]; then echo second run; exit 0; fi; "
              "touch /scratch/second; echo first run; exit 1")
    cluster.apply(pod("retry", [shell("main", script, volumeMounts=[
        {"name": "scratch", "mountPath": "/scratch"}])], restartPolicy="OnFailure",
        volumes=[{"name": "scratch", "emptyDir": {}}]), namespace)

    done = cluster.wait_pod_phase(namespace, "retry", ("Succeeded",), timeout_seconds=30)

    status = done["status"]["containerStatuses"][0]
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert status["state"]["terminated"]["exitCode"] == 0
    assert cluster.container_log(namespace, "retry") == "first run\nsecond run\n"


def test_logs_through_the_api_server(cluster: Cluster, namespace: str) -> None:
    cluster.run_pod(namespace, "talks", SHELL_IMAGE, ["sh", "-c", "echo out; echo err >&2"])
    cluster.wait_pod_phase(namespace, "talks")

    # _preload_content=False: kubernetes-client 36 mangles text bodies (python#2596)
    via_api = cluster.core.read_namespaced_pod_log(
        "talks", namespace, _preload_content=False).data.decode()
    via_kubectl = cluster.kubectl("logs", "-n", namespace, "talks").stdout

    assert sorted(via_api.splitlines()) == ["err", "out"]
    assert via_kubectl == via_api == cluster.container_log(namespace, "talks")


def test_image_without_command_runs_its_mapped_entrypoint(cluster: Cluster, namespace: str) -> None:
    cluster.run_pod(namespace, "mapped", SHELL_IMAGE, args=["sh", "-c", "echo via the mapped sh"])

    done = cluster.wait_pod_phase(namespace, "mapped")

    assert done["status"]["phase"] == "Succeeded", done["status"]
    assert cluster.container_log(namespace, "mapped") == "via the mapped sh\n"


def test_a_volume_over_the_checkout_does_not_hide_the_project(
        cluster: Cluster, namespace: str) -> None:
    # As an image's files stay visible beside its volumes: an emptyDir mounted over the
    # directory that holds the checkout (CI may clone under /tmp, and the chart mounts an
    # emptyDir at /tmp) must not hide the .venv the mapped commands live in.
    from localcluster.settings import REPO_ROOT

    cluster.apply(pod("covered", [{
        "name": "main", "image": "tablesync/job:dev", "args": ["--help"],
        "volumeMounts": [{"name": "cover", "mountPath": str(REPO_ROOT.parent)}]}],
        volumes=[{"name": "cover", "emptyDir": {}}]), namespace)

    done = cluster.wait_pod_phase(namespace, "covered", ("Succeeded", "Failed"))

    assert done["status"]["phase"] == "Succeeded", cluster.container_log(namespace, "covered")
    assert "dump -> diff -> apply" in cluster.container_log(namespace, "covered")
