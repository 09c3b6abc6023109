"""An in-memory stand-in for ``kube.Kube`` for the operator's unit tests.

It keeps objects as dicts and enforces what the reconcile relies on: resourceVersion
preconditions on status and Lease updates (409 -> CONFLICT / None), 409 on creating a Job
that exists, 404 as None. The e2e tests run the real thing against a real API server.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from typing import Any

from tablesync_operator.kube import CONFLICT, Kube, Obj, _Conflict

Key = tuple[str, str]


class FakeKube(Kube):
    def __init__(self) -> None:
        super().__init__(api_client=None)
        self.tablesyncs: dict[Key, Obj] = {}
        self.secrets: dict[Key, set[str]] = {}
        self.service_accounts: set[Key] = set()
        self.cronjobs: dict[Key, Obj] = {}
        self.jobs: dict[Key, Obj] = {}
        self.pods: dict[str, list[Obj]] = {}  # by job uid
        self.events: list[Obj] = []
        self.leases: dict[Key, Obj] = {}
        self.calls: list[str] = []
        self._versions = itertools.count(1000)
        self.conflict_next_status_writes = 0
        self.extra_namespaces: set[str] = set()  # namespaces without TableSyncs

    def _rv(self) -> str:
        return str(next(self._versions))

    # TableSyncs
    def add_tablesync(self, body: Mapping[str, Any]) -> None:
        obj = copy.deepcopy(dict(body))
        obj["metadata"]["resourceVersion"] = self._rv()
        self.tablesyncs[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj

    def get_tablesync(self, namespace: str, name: str) -> Obj | None:
        self.calls.append(f"get_tablesync {name}")
        found = self.tablesyncs.get((namespace, name))
        return copy.deepcopy(found) if found else None

    def list_tablesyncs(self, namespace: str | None) -> list[Obj]:
        self.calls.append(f"list_tablesyncs {namespace}")
        return [copy.deepcopy(b) for (ns, _), b in sorted(self.tablesyncs.items())
                if namespace is None or ns == namespace]

    def list_namespace_names(self) -> list[str]:
        self.calls.append("list_namespaces")
        return sorted({ns for ns, _ in self.tablesyncs} | self.extra_namespaces)

    def replace_tablesync_status(self, body: Mapping[str, Any]) -> Obj | _Conflict | None:
        self.calls.append("replace_status")
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        current = self.tablesyncs.get(key)
        if current is None:
            return None
        if self.conflict_next_status_writes:
            self.conflict_next_status_writes -= 1
            current["metadata"]["resourceVersion"] = self._rv()  # someone else wrote
            return CONFLICT
        if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]:
            return CONFLICT
        current["status"] = copy.deepcopy(body["status"])
        current["metadata"]["resourceVersion"] = self._rv()
        return copy.deepcopy(current)

    def status_of(self, namespace: str, name: str) -> Obj:
        status: Obj = self.tablesyncs[(namespace, name)].get("status") or {}
        return status

    # Secrets
    def get_secret_keys(self, namespace: str, name: str) -> set[str] | None:
        keys = self.secrets.get((namespace, name))
        return set(keys) if keys is not None else None

    def service_account_exists(self, namespace: str, name: str) -> bool:
        return (namespace, name) in self.service_accounts

    # CronJobs / Jobs / pods
    def get_cronjob(self, namespace: str, name: str) -> Obj | None:
        found = self.cronjobs.get((namespace, name))
        return copy.deepcopy(found) if found else None

    def apply_cronjob(self, manifest: Mapping[str, Any]) -> Obj:
        self.calls.append("apply_cronjob")
        meta = manifest["metadata"]
        key = (meta["namespace"], meta["name"])
        obj = copy.deepcopy(dict(manifest))
        old = self.cronjobs.get(key)
        obj["metadata"]["uid"] = old["metadata"]["uid"] if old else f"cj-{meta['name']}"
        obj["metadata"]["creationTimestamp"] = (
            old["metadata"]["creationTimestamp"] if old else "2026-11-21T10:59:00Z"
        )
        obj["status"] = old.get("status", {}) if old else {}
        # as the API server: generation 1 on create, bumped by every change of the spec
        generation = old["metadata"].get("generation", 1) if old else 1
        if old is not None and old.get("spec") != obj.get("spec"):
            generation += 1
        obj["metadata"]["generation"] = generation
        self.cronjobs[key] = obj
        return copy.deepcopy(obj)

    def list_jobs(self, namespace: str, label_selector: str) -> list[Obj]:
        wanted = dict(part.split("=", 1) for part in label_selector.split(","))
        return [
            copy.deepcopy(j)
            for (ns, _), j in sorted(self.jobs.items())
            if ns == namespace
            and all((j["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
        ]

    def create_job(self, manifest: Mapping[str, Any]) -> Obj | None:
        self.calls.append(f"create_job {manifest['metadata']['name']}")
        key = (manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        if key in self.jobs:
            return None
        obj = copy.deepcopy(dict(manifest))
        obj["metadata"]["uid"] = f"uid-{key[1]}"
        obj["status"] = {"active": 1, "startTime": "2026-11-21T11:00:00Z"}
        self.jobs[key] = obj
        return copy.deepcopy(obj)

    def list_pods(self, namespace: str, label_selector: str) -> list[Obj]:
        uid = label_selector.split("=", 1)[1]
        return copy.deepcopy(self.pods.get(uid, []))

    def create_event(self, manifest: Mapping[str, Any]) -> None:
        self.events.append(copy.deepcopy(dict(manifest)))

    # Leases
    def get_lease(self, namespace: str, name: str) -> Obj | None:
        found = self.leases.get((namespace, name))
        return copy.deepcopy(found) if found else None

    def create_lease(self, manifest: Mapping[str, Any]) -> Obj | None:
        key = (manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        if key in self.leases:
            return None
        obj = copy.deepcopy(dict(manifest))
        obj["metadata"]["resourceVersion"] = self._rv()
        self.leases[key] = obj
        return copy.deepcopy(obj)

    def replace_lease(self, manifest: Mapping[str, Any]) -> Obj | None:
        key = (manifest["metadata"]["namespace"], manifest["metadata"]["name"])
        current = self.leases.get(key)
        if (
            current is None
            or current["metadata"]["resourceVersion"] != manifest["metadata"]["resourceVersion"]
        ):
            return None
        obj = copy.deepcopy(dict(manifest))
        obj["metadata"]["resourceVersion"] = self._rv()
        self.leases[key] = obj
        return copy.deepcopy(obj)
