"""Command line: ``PYTHONPATH=tests/e2e/cluster .venv/bin/python -m localcluster COMMAND``.

Commands (``--state DIR`` everywhere; default ``$TABLESYNC_CLUSTER_STATE`` or ``<repo>/.cluster``):

* ``up [--image-commands FILE]`` — start the cluster in the background and return; prints how
  to use it, and the kubeconfig path alone on the last line. Exit 0 if it is up (also when it
  already was).
* ``down`` — stop everything ``up`` started, by pid. Exit 1 if something would not stop.
* ``status`` — each process and ``/readyz``. Exit 0 if healthy, 3 if not running/unhealthy.
* ``trigger-cronjob [-n NAMESPACE] NAME [--job-name JOB]`` — start a CronJob's Job now
  (``kubectl create job --from=cronjob/NAME``); prints the Job's name.
* ``logs NAMESPACE/POD [CONTAINER]`` — print a container's log file.

Called by the Makefile (cluster-up, cluster-down) and by people.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .settings import KUBECTL, PACKAGE_PARENT, default_state_dir


def _usage(state_dir: Path) -> str:
    from .state import ClusterState

    state = ClusterState.load(state_dir)
    minio = state.minio
    lines = [
        f"Local cluster is up ({state.startup_seconds} s to start); state in {state_dir}",
        f"  API server   {state.apiserver_url}",
        f"  MinIO        {minio.endpoint} (user {minio.access_key}, password {minio.secret_key})"
        if minio else "  MinIO        -",
        f"  pod logs     {state_dir}/pods/<namespace>_<pod>/<container>.log",
        "Use it:",
        f"  export KUBECONFIG={state.kubeconfig}",
        f"  {KUBECTL} get nodes",
        f"  export TABLESYNC_KUBECONFIG={state.kubeconfig}   # the e2e suite reuses this cluster",
        f"Stop it: PYTHONPATH={PACKAGE_PARENT} {sys.executable} -m localcluster down",
        state.kubeconfig,
    ]
    return "\n".join(lines)


RESULT_PREFIX = "__localcluster_up_exit__="


def cmd_up(args: argparse.Namespace) -> int:
    from .controlplane import ClusterError, status, up

    healthy, _ = status(args.state)
    if healthy:
        print(_usage(args.state))
        return 0
    if not args.attached:
        # The work happens in a child in a new session, so the daemons (MinIO included) belong
        # to neither the caller's terminal nor its process group. The child stays behind as
        # their parent only to reap them when `down` stops them (not every init reaps orphans).
        argv = [sys.executable, "-m", "localcluster", "--state", str(args.state), "up",
                "--attached"]
        if args.image_commands:
            argv += ["--image-commands", str(args.image_commands)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(PACKAGE_PARENT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 env=env, start_new_session=True, text=True)
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith(RESULT_PREFIX):
                return int(line[len(RESULT_PREFIX):])
            sys.stdout.write(line)
            sys.stdout.flush()
        return child.wait() or 1
    try:
        up(args.state, image_commands_file=args.image_commands)
    except ClusterError as err:
        print(f"[localcluster] cluster-up failed: {err}", file=sys.stderr)
        print(f"{RESULT_PREFIX}1", flush=True)
        return 1
    _record_supervisor(args.state)
    print(_usage(args.state))
    print(f"{RESULT_PREFIX}0", flush=True)
    _reap_children_until_none_left()
    return 0


def _record_supervisor(state_dir: Path) -> None:
    from .procs import ProcessRecord, process_start_ticks
    from .state import ClusterState

    state = ClusterState.load(state_dir)
    state.processes.append(ProcessRecord("supervisor", os.getpid(),
                                         process_start_ticks(os.getpid()) or -1, ""))
    state.save()


def _reap_children_until_none_left() -> None:
    """Detach from the caller's stdout/stderr, then wait for every child to exit."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return
        except InterruptedError:
            continue


def cmd_down(args: argparse.Namespace) -> int:
    from .controlplane import down

    failed = down(args.state)
    if failed:
        print(f"[localcluster] could not stop: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"[localcluster] stopped; logs kept in {args.state}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .controlplane import status

    healthy, lines = status(args.state)
    print("\n".join(lines))
    return 0 if healthy else 3


def cmd_trigger(args: argparse.Namespace) -> int:
    from kubernetes import config

    from .cronjobs import trigger_cronjob
    from .state import ClusterState

    kubeconfig = args.kubeconfig or ClusterState.load(args.state).kubeconfig
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    job = trigger_cronjob(api_client, args.namespace, args.name, args.job_name)
    print(job["metadata"]["name"])
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from .logs import container_log_path, read_container_log

    namespace, _, pod = args.pod.partition("/")
    container = args.container
    if container is None:
        found = sorted(container_log_path(args.state, namespace, pod, "x").parent.glob("*.log"))
        if len(found) != 1:
            names = [p.stem for p in found]
            print(f"name the container: {names or 'no logs found'}", file=sys.stderr)
            return 2
        container = found[0].stem
    sys.stdout.write(read_container_log(args.state, namespace, pod, container))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", type=Path, default=default_state_dir(),
                        help="state directory (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the cluster in the background")
    p_up.add_argument("--image-commands", type=Path, help="YAML/JSON image → command map")
    p_up.add_argument("--attached", action="store_true", help=argparse.SUPPRESS)
    p_up.set_defaults(func=cmd_up)
    sub.add_parser("down", help="stop the cluster").set_defaults(func=cmd_down)
    sub.add_parser("status", help="show the cluster's processes").set_defaults(func=cmd_status)
    p_trigger = sub.add_parser("trigger-cronjob", help="create a Job from a CronJob now")
    p_trigger.add_argument("name")
    p_trigger.add_argument("-n", "--namespace", default="default")
    p_trigger.add_argument("--job-name")
    p_trigger.add_argument("--kubeconfig", type=Path)
    p_trigger.set_defaults(func=cmd_trigger)
    p_logs = sub.add_parser("logs", help="print a container's log")
    p_logs.add_argument("pod", help="NAMESPACE/POD")
    p_logs.add_argument("container", nargs="?")
    p_logs.set_defaults(func=cmd_logs)
    args = parser.parse_args(argv)
    args.state = args.state.resolve()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
