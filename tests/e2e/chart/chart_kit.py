"""Helpers of the chart's e2e tests: install the rendered chart, find its operator pod, reach
the pod's port, and list which RBAC bindings grant a ServiceAccount anything.

The chart is installed in namespaced mode (``operator.watchNamespaces`` = the test's own,
fresh namespace, which is also the release namespace), so its operator never sees a
TableSync of another test, and the process-run operator of ``tests/e2e/operator`` (which
watches only ``tso-*`` namespaces) never sees this one.
"""

from __future__ import annotations

import json
import re
import secrets
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import yaml
from kubernetes import client

from localcluster.testing import Cluster
from tests.support.services import free_port
from tests.unit.chart.helm import render_text

JsonDict = dict[str, Any]
# The bindings every cluster has (system:basic-user, system:discovery, ...): discovery and
# self-reviews for all authenticated users, nothing on any resource of ours.
BOOTSTRAP_LABEL = ("kubernetes.io/bootstrapping", "rbac-defaults")


@dataclass(frozen=True)
class ChartRelease:
    """A rendered chart applied to the cluster (release namespace = watched namespace)."""

    name: str
    namespace: str
    objects: list[JsonDict]
    resync_seconds: int

    @property
    def operator(self) -> str:
        """The operator's Deployment, ServiceAccount and Lease name."""
        return f"{self.name}-operator"

    @property
    def job_service_account(self) -> str:
        return f"{self.name}-job"

    def bindings(self) -> set[tuple[str, str, str]]:
        """(kind, namespace, name) of every binding the chart rendered."""
        return {
            (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])
            for o in self.objects
            if o["kind"] in ("RoleBinding", "ClusterRoleBinding")
        }

    def roles(self) -> list[JsonDict]:
        return [o for o in self.objects if o["kind"] in ("Role", "ClusterRole")]


@contextmanager
def install_chart(cluster: Cluster, namespace: str) -> Iterator[ChartRelease]:
    """``helm template | kubectl apply`` the chart into ``namespace``, watching only it (the
    CRDs are left out: the ``tablesync_crd`` fixture applies them session-wide). Deletes the
    Deployment, then the chart's cluster-scoped objects afterwards; the namespace's deletion
    removes the rest."""
    release = f"tablesync-e2e-{secrets.token_hex(3)}"
    resync_seconds = 5
    values = {
        "crds": {"install": False},
        "operator": {
            "watchNamespaces": [namespace],
            "resyncIntervalSeconds": resync_seconds,
            "verbose": True,
        },
        # pods are local processes sharing the host network: a port nobody else holds
        # (not the default 8080, nor another operator's)
        "metrics": {"port": free_port()},
        "job": {"backoffLimit": 0, "activeDeadlineSeconds": 300},
    }
    manifests = render_text(values, namespace=namespace, release=release)
    objects = [doc for doc in yaml.safe_load_all(manifests) if doc]
    cluster.kubectl("apply", "-f", "-", input_text=manifests)
    try:
        yield ChartRelease(release, namespace, objects, resync_seconds)
    finally:
        cluster.kubectl("-n", namespace, "delete", "deployment", "--all", "--wait=false",
                        check=False)
        cluster_scoped = [o for o in objects if "namespace" not in o["metadata"]]
        cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", "-",
                        input_text=yaml.safe_dump_all(cluster_scoped), check=False)


def get_json(cluster: Cluster, *args: str) -> JsonDict:
    result: JsonDict = json.loads(cluster.kubectl("get", "-o", "json", *args).stdout)
    return result


def condition(obj: JsonDict, kind: str) -> JsonDict | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            found: JsonDict = cond
            return found
    return None


def operator_pod(cluster: Cluster, namespace: str) -> JsonDict | None:
    """The running operator pod of the chart in ``namespace``, if any."""
    pods = get_json(cluster, "-n", namespace, "pods", "-l",
                    "app.kubernetes.io/component=operator")["items"]
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    return running[0] if running else None


def from_pod(cluster: Cluster, pod: JsonDict, port: int, path: str) -> str:
    """GET ``path`` from the pod's port: directly on the local cluster (pods are local
    processes), through the API server's pod proxy elsewhere."""
    if cluster.local:
        url = f"http://{pod['status']['podIP']}:{port}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())
    meta = pod["metadata"]
    raw = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}:{port}/proxy{path}"
    return cluster.kubectl("get", "--raw", raw).stdout


def _names_service_account(subject: Any, binding_namespace: str, namespace: str,
                           name: str) -> bool:
    """Whether an RBAC subject covers ServiceAccount ``namespace/name``: the account itself,
    its user name, or a group it belongs to."""
    if subject.kind == "ServiceAccount":
        return bool(subject.name == name
                    and (subject.namespace or binding_namespace) == namespace)
    if subject.kind == "User":
        return bool(subject.name == f"system:serviceaccount:{namespace}:{name}")
    return subject.kind == "Group" and subject.name in (
        "system:authenticated", "system:serviceaccounts", f"system:serviceaccounts:{namespace}")


def bindings_granting(cluster: Cluster, namespace: str,
                      name: str) -> tuple[set[tuple[str, str, str]], set[tuple[str, str, str]]]:
    """Every RoleBinding and ClusterRoleBinding in the cluster whose subjects cover the
    ServiceAccount, as (kind, namespace, name): (the cluster's bootstrap defaults, the rest).
    With ``--authorization-mode=Node,RBAC`` these are all the account's grants."""
    rbac = client.RbacAuthorizationV1Api(cluster.api_client)
    bindings = [("ClusterRoleBinding", b) for b in rbac.list_cluster_role_binding().items]
    bindings += [("RoleBinding", b) for b in rbac.list_role_binding_for_all_namespaces().items]
    defaults: set[tuple[str, str, str]] = set()
    others: set[tuple[str, str, str]] = set()
    for kind, binding in bindings:
        meta = binding.metadata
        if not any(_names_service_account(s, meta.namespace or "", namespace, name)
                   for s in binding.subjects or []):
            continue
        key = (kind, meta.namespace or "", meta.name)
        label, value = BOOTSTRAP_LABEL
        if (meta.labels or {}).get(label) == value and meta.name.startswith("system:"):
            defaults.add(key)
        else:
            others.add(key)
    return defaults, others


_REFUSED = re.compile(r"forbidden|\b(?:HTTP|status|code)\W{0,3}403\b", re.I)


def refused_requests(log: str) -> list[str]:
    """The lines of an operator log that report a request the API server refused (403;
    Kubernetes says "... is forbidden: User ... cannot ...")."""
    return [line for line in log.splitlines() if _REFUSED.search(line)]
