"""``make demo``: the whole lane on embedded defaults, from a fresh machine.

1. starts the local cluster (real kube-apiserver, controller-manager, etcd, MinIO, a pod
   runner that runs pods as local processes) — ``tests/e2e/cluster``;
2. starts Postgres and loads a source table of 1,000,000 product prices (``shop.prices``) and
   an empty destination (``warehouse.prices``);
3. installs the CRD and starts the operator;
4. creates a TableSync and triggers runs while an "event lane" delivers most, not all,
   changes to the destination; prints ``kubectl get tablesyncs`` as lag, drift and overrun
   change; summarises what the lane corrected; leaves everything running to explore.

State lives in ``.demo/`` (gitignored; ``TABLESYNC_DEMO_STATE`` moves it, and
``TABLESYNC_DEMO_ROWS`` sets the table size; the event lane changes 2% of it a cycle).
``make demo-down`` stops it all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from demo.eventlane import run_events
from tests.support.services import PostgresServer, postgres_bindir, start_postgres

REPO = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("TABLESYNC_DEMO_STATE", str(REPO / ".demo"))).resolve()
VENV_BIN = Path(sys.executable).parent
KUBECTL = str(VENV_BIN / "kubectl")
ROWS = int(os.environ.get("TABLESYNC_DEMO_ROWS", "1000000"))
NAMESPACE = "demo"


def say(msg: str) -> None:
    print(f"\033[1m[demo]\033[0m {msg}", flush=True)


def sh(*args: str, env: dict[str, str] | None = None, check: bool = True,
       capture: bool = True, stdin: str | None = None) -> str:
    proc = subprocess.run(args, env={**os.environ, **(env or {})}, text=True, input=stdin,
                          stdout=subprocess.PIPE if capture else None, check=False)
    if check and proc.returncode != 0:
        raise SystemExit(f"[demo] failed: {' '.join(args[:4])} ... (exit {proc.returncode})")
    return proc.stdout or ""


class Demo:
    def __init__(self) -> None:
        STATE.mkdir(exist_ok=True)
        self.kubeconfig = ""
        self.env: dict[str, str] = {}
        self.pg: PostgresServer | None = None

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        return sh(KUBECTL, *args, env=self.env, stdin=stdin, check=check)

    # 1 -----------------------------------------------------------------------------------
    def cluster(self) -> dict[str, Any]:
        say("1/6 starting the local Kubernetes control plane, MinIO and the pod runner")
        out = sh(sys.executable, "-m", "localcluster", "--state", str(STATE / "cluster"), "up",
                 env={"PYTHONPATH": str(REPO / "tests/e2e/cluster")})
        self.kubeconfig = out.strip().splitlines()[-1]
        self.env = {"KUBECONFIG": self.kubeconfig}
        sys.path.insert(0, str(REPO / "tests/e2e/cluster"))
        from localcluster.state import ClusterState

        minio = ClusterState.load(STATE / "cluster").minio
        assert minio is not None
        say(f"    API server up; kubeconfig {self.kubeconfig}")
        # `make demo` again: the last demo's TableSync and its jobs go before step 2 makes
        # the tables anew (its snapshots go in step 4), or run 1 would not bootstrap
        self.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait",
                     "--timeout=120s")
        return {"endpoint": minio.endpoint, "access_key": minio.access_key,
                "secret_key": minio.secret_key}

    # 2 -----------------------------------------------------------------------------------
    def postgres(self) -> str:
        say(f"2/6 Postgres: loading {ROWS:,} product prices into shop.prices")
        pg_dir = STATE / "postgres"
        port_file = STATE / "postgres.port"
        if port_file.exists():
            self.pg = PostgresServer(port=int(port_file.read_text()),
                                     data_dir=_pg_home(pg_dir) / "pgdata",
                                     bindir=postgres_bindir())
            try:
                psycopg.connect(self.pg.uri(), connect_timeout=3).close()
            except psycopg.Error:
                self.pg = None
        if self.pg is None:
            home = _pg_home(pg_dir)
            if home != pg_dir:  # (as root) the dead server's own directory, with the link
                PostgresServer(port=0, data_dir=home / "pgdata", bindir=postgres_bindir()).stop()
            sh("rm", "-rf", str(pg_dir))
            self.pg = start_postgres(pg_dir)
            port_file.write_text(str(self.pg.port))
        uri = self.pg.create_database("demo")
        with psycopg.connect(uri, autocommit=True) as conn:
            for schema in ("shop", "warehouse"):
                conn.execute(f"CREATE SCHEMA {schema}")
                conn.execute(f"CREATE TABLE {schema}.prices (id bigint PRIMARY KEY, sku text "
                             "NOT NULL, price numeric(12,2) NOT NULL, currency char(3) NOT NULL,"
                             " title text, updated_at timestamptz NOT NULL, version bigint "
                             "NOT NULL)")
            started = time.monotonic()
            conn.execute(
                "INSERT INTO shop.prices SELECT g, 'SKU-' || g, "
                "round((random() * 500)::numeric, 2), (ARRAY['EUR','USD','GBP'])[1 + g % 3], "
                "'Product ' || g || ' — ' || md5(g::text), now() - interval '2 days', 1 "
                f"FROM generate_series(1, {ROWS}) g")
            conn.execute("VACUUM ANALYZE shop.prices")
        say(f"    loaded in {time.monotonic() - started:.1f} s; destination warehouse.prices "
            "is empty")
        return uri

    # 3 -----------------------------------------------------------------------------------
    def operator(self, uri: str, s3: dict[str, Any]) -> None:
        say("3/6 installing the CRD and starting the operator")
        self.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        self.kubectl("wait", "--for=condition=Established", "crd/tablesyncs.tablesync.dev")
        ns = json.dumps({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": NAMESPACE}})
        self.kubectl("apply", "-f", "-", stdin=ns)
        for name, data in (("replica", {"uri": uri}), ("warehouse", {"uri": uri}),
                           ("s3", {"AWS_ACCESS_KEY_ID": s3["access_key"],
                                   "AWS_SECRET_ACCESS_KEY": s3["secret_key"]})):
            secret = {"apiVersion": "v1", "kind": "Secret",
                      "metadata": {"name": name, "namespace": NAMESPACE}, "stringData": data}
            self.kubectl("apply", "-f", "-", stdin=json.dumps(secret))
        pid_file = STATE / "operator.pid"
        _stop_operator(pid_file)
        log = (STATE / "operator.log").open("ab")
        proc = subprocess.Popen(
            [str(VENV_BIN / "tablesync-operator")],
            env={**os.environ, **self.env, "TABLESYNC_OPERATOR_METRICS_PORT": "0"},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        pid_file.write_text(str(proc.pid))
        say(f"    operator pid {proc.pid}, log {STATE / 'operator.log'}")

    # 4 -----------------------------------------------------------------------------------
    def tablesync(self, s3: dict[str, Any]) -> None:
        import boto3

        client = boto3.client("s3", endpoint_url=s3["endpoint"],
                              aws_access_key_id=s3["access_key"],
                              aws_secret_access_key=s3["secret_key"], region_name="us-east-1")
        try:
            client.create_bucket(Bucket="tablesync-demo")
        except client.exceptions.BucketAlreadyOwnedByYou:
            # `make demo` again: the last demo's snapshots and state.json describe tables
            # step 2 made anew
            for page in client.get_paginator("list_objects_v2").paginate(
                    Bucket="tablesync-demo"):
                for obj in page.get("Contents", []):
                    client.delete_object(Bucket="tablesync-demo", Key=obj["Key"])
        say("4/6 creating TableSync demo/prices (schedule every 30 minutes; runs triggered now)")
        manifest = {
            "apiVersion": "tablesync.dev/v1alpha1", "kind": "TableSync",
            "metadata": {"name": "prices", "namespace": NAMESPACE},
            "spec": {
                "schedule": "*/30 * * * *",
                "source": {"uriSecretRef": {"name": "replica", "key": "uri"},
                           "table": "shop.prices", "primaryKey": ["id"],
                           "versionColumn": "updated_at"},
                "storage": {"url": "s3://tablesync-demo/prices", "endpoint": s3["endpoint"],
                            "credentialsSecretRef": {"name": "s3"}, "keepSnapshots": 3},
                "destination": {"uriSecretRef": {"name": "warehouse", "key": "uri"},
                                "table": "warehouse.prices", "deletes": "apply"},
                "guards": {"maxDeleteFraction": 0.05},
                "lagThresholdSeconds": 120,
                # Small on purpose: the 1M-row bootstrap overruns it, the later runs fit.
                "overrunBudgetSeconds": 5,
            },
        }
        self.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
        self.kubectl("wait", "-n", NAMESPACE, "--for=condition=Ready", "ts/prices",
                     "--timeout=120s")
        self.show()

    def status(self) -> dict[str, Any]:
        out = self.kubectl("get", "ts", "prices", "-n", NAMESPACE, "-o", "json")
        status: dict[str, Any] = json.loads(out).get("status", {})
        return status

    def show(self) -> None:
        print(self.kubectl("get", "tablesyncs", "-n", NAMESPACE), end="", flush=True)
        status = self.status()
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        overrun = status.get("overrun") or {}
        if "Overrun" in conditions:
            cycle = overrun.get("lastCycleSeconds")
            print(f"  Overrun={conditions['Overrun']['status']} ("
                  f"{'no run yet' if cycle is None else f'last cycle {cycle:.1f} s'}, budget "
                  f"{overrun.get('budgetSeconds', '?')} s, {overrun.get('totalOverruns', 0)} "
                  f"overrun(s) so far)  Lagging={conditions.get('Lagging', {}).get('status')}  "
                  f"Drifted={conditions.get('Drifted', {}).get('status')}", flush=True)

    def run_now(self, label: str, timeout: float = 600) -> dict[str, Any]:
        """Request a run and return its ``lastRun``: the run of the Job the request started
        (``status.runRequest``), not a scheduled one that finished meanwhile."""
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        self.kubectl("annotate", "--overwrite", "-n", NAMESPACE, "ts/prices",
                     f"tablesync.dev/run-requested-at={stamp}")
        say(f"    {label}: run requested at {stamp}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            request = status.get("runRequest") or {}
            last = status.get("lastRun") or {}
            if (request.get("requestedAt") == stamp and request.get("jobName")
                    and last.get("jobName") == request["jobName"] and last.get("result")):
                return last
            time.sleep(2)
        raise SystemExit(f"[demo] run did not finish in {timeout:.0f} s; see "
                         f"{STATE}/operator.log and {STATE}/cluster/pods/")

    # 5 -----------------------------------------------------------------------------------
    def cycles(self, uri: str) -> tuple[int, int]:
        say("5/6 run 1: bootstrap — the whole snapshot is applied as version-guarded upserts")
        last = self.run_now("bootstrap")
        self.report(last)
        self.show()
        check_run("run 1", last)
        dropped_total = 0
        for cycle in (2, 3):
            # 2% of the table a cycle, as 20,000 of 1M: its deletes (a twentieth) stay far
            # under the delete guard (maxDeleteFraction 0.05) at any TABLESYNC_DEMO_ROWS
            stats = run_events(uri, changes=max(1, ROWS // 50), delivery=0.95, seed=cycle,
                               max_id=ROWS)
            dropped_total += stats.dropped
            say(f"    event lane: {stats.changes:,} source changes, {stats.delivered:,} "
                f"delivered, {stats.dropped:,} dropped (invisible drift)")
            say(f"    destination rows differing from the source: {self.mismatches(uri):,}")
            say(f"run {cycle}: tablesync reconciles")
            last = self.run_now(f"run {cycle}")
            self.report(last)
            self.show()
            check_run(f"run {cycle}", last)
        return dropped_total, self.mismatches(uri)

    def report(self, last: dict[str, Any]) -> None:
        apply = last.get("apply") or {}
        phases = last.get("phaseSeconds") or {}
        say(f"    result {last.get('result')} ({last.get('reason', '')}): "
            f"inserted {apply.get('inserted', 0):,}, updated {apply.get('updated', 0):,}, "
            f"deleted {apply.get('deleted', 0):,}, already current "
            f"{apply.get('alreadyCurrent', 0):,}, stale skipped {apply.get('staleSkipped', 0):,}"
            f"; phases {', '.join(f'{k} {v:.1f}s' for k, v in phases.items())}")

    def mismatches(self, uri: str) -> int:
        with psycopg.connect(uri) as conn:
            row = conn.execute(
                "SELECT count(*) FROM shop.prices s FULL JOIN warehouse.prices w USING (id) "
                "WHERE s IS DISTINCT FROM w").fetchone()
        return int(row[0]) if row else -1

    # 6 -----------------------------------------------------------------------------------
    def summary(self, dropped: int, remaining: int) -> None:
        status = self.status()
        drift = status.get("drift") or {}
        say("6/6 summary")
        print(f"  events the lane dropped:           {dropped:,}")
        print(f"  rows tablesync corrected (drift):  {drift.get('totalRows', 0):,} "
              f"(inserted {drift.get('totalInserted', 0):,}, updated "
              f"{drift.get('totalUpdated', 0):,}, deleted {drift.get('totalDeleted', 0):,})")
        print(f"  destination rows still differing: {remaining:,}")
        print("  (a row that lost two events is one row of drift; one whose lost event a "
              "later delivered event superseded is none)")
        print(f"  lag now: {status.get('lagSeconds', '?')} s; overrun: "
              f"{(status.get('overrun') or {}).get('totalOverruns', 0)} cycle(s) over budget")
        assert self.pg is not None
        print(f"""
Explore:
  export KUBECONFIG={self.kubeconfig}
  {KUBECTL} get tablesyncs -n {NAMESPACE} -w
  {KUBECTL} describe tablesync prices -n {NAMESPACE}
  {KUBECTL} get ts prices -n {NAMESPACE} -o jsonpath='{{.status}}' | python3 -m json.tool
  {KUBECTL} annotate ts/prices -n {NAMESPACE} --overwrite tablesync.dev/run-requested-at=$(date +%s)
  psql {self.pg.uri('demo')}   # shop.prices (source), warehouse.prices (destination)
  operator log: {STATE / 'operator.log'}; job pod logs: {STATE / 'cluster' / 'pods'}
Stop everything:
  make demo-down
""")


def _pg_home(pg_dir: Path) -> Path:
    """Where the demo's Postgres keeps its files: ``pg_dir``, or as root the directory
    ``start_postgres`` links as ``pg_dir/server`` (resolved: the 'postgres' user that stops
    the server may not reach the link)."""
    return (pg_dir / "server").resolve() if (pg_dir / "server").exists() else pg_dir


def check_run(label: str, last: dict[str, Any]) -> None:
    """SystemExit (exit 1) naming the run's reason and message unless ``last`` (its
    ``status.lastRun``) succeeded: the demo went on, and ended "done", after a failed run."""
    if last.get("result") == "Succeeded":
        return
    raise SystemExit(f"[demo] {label} ended {last.get('result')} ({last.get('reason')}): "
                     f"{last.get('message') or last.get('error') or 'no message'}; see "
                     f"{STATE}/operator.log and `kubectl describe ts/prices -n {NAMESPACE}`; "
                     "`make demo-down` stops it all")


def _stop_operator(pid_file: Path) -> None:
    """SIGTERM the operator a demo started, if ``pid_file`` names it still: the file outlives
    it (a reboot, a crash), and by then its pid may be any other process's."""
    if not pid_file.exists():
        return
    pid = pid_file.read_text().strip()
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return
    if str(VENV_BIN / "tablesync-operator").encode() in argv:
        sh("kill", pid, check=False)


def down() -> int:
    """Stop what ``make demo`` started; 1 when the cluster could not be stopped."""
    pid_file = STATE / "operator.pid"
    _stop_operator(pid_file)
    pid_file.unlink(missing_ok=True)
    cluster = subprocess.run(
        [sys.executable, "-m", "localcluster", "--state", str(STATE / "cluster"), "down"],
        env={**os.environ, "PYTHONPATH": str(REPO / "tests/e2e/cluster")}, check=False,
    ).returncode
    pg_data = _pg_home(STATE / "postgres") / "pgdata"
    if pg_data.exists():
        PostgresServer(port=0, data_dir=pg_data, bindir=postgres_bindir()).stop()
    (STATE / "postgres.port").unlink(missing_ok=True)
    if cluster != 0:
        say(f"stopped the operator and Postgres, but not the cluster (localcluster down exited "
            f"{cluster}, see above): its processes (API server, etcd, MinIO, pods) may still "
            f"run; their pids are in {STATE / 'cluster' / 'state.json'}")
        return 1
    say("stopped: operator, cluster, MinIO and Postgres")
    return 0


def main() -> int:
    if sys.argv[1:] == ["down"]:
        return down()
    started = time.monotonic()
    demo = Demo()
    try:
        s3 = demo.cluster()
        uri = demo.postgres()
        demo.operator(uri, s3)
        demo.tablesync(s3)
        dropped, remaining = demo.cycles(uri)
    except KeyboardInterrupt:
        say("interrupted: what the demo started so far keeps running (cluster, MinIO, "
            "Postgres, operator, a run's job); `make demo-down` stops it all, `make demo` "
            "starts over")
        return 130
    demo.summary(dropped, remaining)
    if remaining:
        say(f"{remaining:,} row(s) still differ after the last run: the demo did not show "
            "what it should; see the runs above")
        return 1
    say(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
