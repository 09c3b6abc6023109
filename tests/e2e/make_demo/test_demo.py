"""``make demo`` keeps working: the demo, on a small table, end to end, then ``demo down``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[3]


def demo_env(tmp_path: Path, rows: int) -> dict[str, str]:
    env = {**os.environ, "TABLESYNC_DEMO_STATE": str(tmp_path / "demo"),
           "TABLESYNC_DEMO_ROWS": str(rows), "PYTHONPATH": str(REPO)}
    env.pop("KUBECONFIG", None)
    return env


def run_demo(env: dict[str, str], attempt: str = "") -> str:
    """Run the demo to its end; its output, once it said every run applied and no row
    still differs."""
    run = subprocess.run([sys.executable, "-m", "demo"], cwd=REPO, env=env, text=True,
                         capture_output=True, timeout=600, check=False)
    out = run.stdout
    assert run.returncode == 0, f"{attempt}: " + out[-3000:] + run.stderr[-3000:]
    assert out.count("result Succeeded (Applied)") == 2, f"{attempt}: " + out[-3000:]
    assert "destination rows still differing: 0" in out, attempt
    return out


def demo_down(env: dict[str, str]) -> None:
    down = subprocess.run([sys.executable, "-m", "demo", "down"], cwd=REPO, env=env,
                          text=True, capture_output=True, timeout=120, check=False)
    assert down.returncode == 0, down.stdout + down.stderr


def test_demo_down_says_so_when_the_cluster_did_not_stop(tmp_path: Path) -> None:
    """It said "stopped: operator, cluster, MinIO and Postgres" and exited 0 whatever
    localcluster down answered, so a cluster left running went unnoticed."""
    env = demo_env(tmp_path, 1000)
    cluster = tmp_path / "demo" / "cluster"
    cluster.mkdir(parents=True)
    (cluster / "state.json").write_text("{half a state file")
    down = subprocess.run([sys.executable, "-m", "demo", "down"], cwd=REPO, env=env,
                          text=True, capture_output=True, timeout=120, check=False)
    assert down.returncode == 1, down.stdout + down.stderr
    assert "not the cluster" in down.stdout and "stopped: operator, cluster" not in down.stdout
    (cluster / "state.json").unlink()
    demo_down(env)  # nothing left to stop: exit 0


def test_the_demo_corrects_every_dropped_event_and_stops_cleanly(tmp_path: Path) -> None:
    env = demo_env(tmp_path, 20000)
    try:
        out = run_demo(env)
        assert "result Succeeded (Bootstrapped): inserted 20,000" in out
        assert "Drifted=True" in out
        # before run 1 there is no cycle to show (it said "last cycle 0.0 s")
        assert "Overrun=Unknown (no run yet, budget 5 s" in out, out[:3000]
        # why fewer rows are drift than events were dropped: a lost update that a delivered
        # one overwrote left the row current (it said that was one row of drift too)
        assert "one whose lost event a later delivered event superseded is none" in out
        assert "make demo-down" in out
    finally:
        pid_file = tmp_path / "demo" / "operator.pid"
        operator = pid_file.read_text().strip() if pid_file.exists() else ""
        demo_down(env)
    # the operator (its command line does not name the state directory)
    deadline = time.monotonic() + 30
    while operator and Path(f"/proc/{operator}").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (operator and Path(f"/proc/{operator}").exists()), f"operator {operator} runs"
    # as root, the demo's Postgres keeps its files in a directory linked from its state
    server = tmp_path / "demo" / "postgres" / "server"
    for place in (tmp_path / "demo", *([server.resolve()] if server.is_symlink() else [])):
        leftovers = subprocess.run(["pgrep", "-f", str(place)], capture_output=True,
                                   text=True, check=False).stdout
        assert leftovers == "", f"processes left running: {leftovers}"


def test_a_smaller_demo_table_is_still_reconciled(tmp_path: Path) -> None:
    """``TABLESYNC_DEMO_ROWS`` sets the table size, but the event lane made 20,000 changes a
    cycle whatever the size: on 5,000 rows it deleted about 900 of them, a fifth, past the
    demo's ``maxDeleteFraction: 0.05``. Runs 2 and 3 tripped the delete guard, and the demo
    ended "done" with hundreds of rows still differing. The lane changes 2% of the table
    a cycle (20,000 of 1M, as before)."""
    env = demo_env(tmp_path, 5000)
    try:
        out = run_demo(env)
        assert "GuardTripped" not in out, out[-3000:]
    finally:
        demo_down(env)


def test_make_demo_twice_in_a_row_starts_over_with_a_bootstrap(tmp_path: Path) -> None:
    """`make demo` a second time (the first left everything running, as it says) reuses the
    cluster and Postgres but loads the tables anew. The first demo's bucket and TableSync
    stayed: creating the bucket failed with a BucketAlreadyOwnedByYou traceback, and with
    it let be, run 1 would have diffed against the first demo's snapshots, not bootstrapped."""
    env = demo_env(tmp_path, 5000)
    try:
        for attempt in ("first", "second"):
            out = run_demo(env, attempt)
            assert "result Succeeded (Bootstrapped): inserted 5,000" in out, attempt
        # the second demo's TableSync counts its own three runs only
        assert "lag now:" in out
        kubeconfig = out.split("export KUBECONFIG=")[1].split()[0]
        runs = subprocess.run([str(Path(sys.executable).parent / "kubectl"), "get", "ts",
                               "prices", "-n", "demo", "-o", "jsonpath={.status.runs}"],
                              env={**env, "KUBECONFIG": kubeconfig}, text=True,
                              capture_output=True, check=True).stdout
        assert '"succeeded":3' in runs, runs
    finally:
        demo_down(env)


def test_ctrl_c_midway_says_how_to_stop_what_it_started(tmp_path: Path) -> None:
    """Ctrl-C during a run ended the demo with a KeyboardInterrupt traceback, leaving the
    cluster, MinIO, Postgres and the operator running (in sessions of their own) without a
    word on how to stop them. It now says so and names ``make demo-down``; exit 130."""
    env = demo_env(tmp_path, 5000)
    try:
        # (as a terminal's Ctrl-C finds it: a suite run in the background ignores SIGINT)
        proc = subprocess.Popen([sys.executable, "-m", "demo"], cwd=REPO, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "bootstrap: run requested" in line:
                proc.send_signal(signal.SIGINT)
                break
        out, err = proc.communicate(timeout=60)
        out = "".join(seen) + out
        assert proc.returncode == 130, out[-3000:] + err[-3000:]
        assert "Traceback" not in err, err[-3000:]
        assert "interrupted" in out and "make demo-down" in out.split("interrupted")[1], out
    finally:
        demo_down(env)
    leftovers = subprocess.run(["pgrep", "-f", str(tmp_path / "demo")], capture_output=True,
                               text=True, check=False).stdout
    assert leftovers == "", f"processes left running: {leftovers}"


def test_a_scheduled_run_is_not_taken_for_the_run_the_demo_asked_for(tmp_path: Path) -> None:
    """The demo's schedule (every 30 minutes) can fire while it runs. A scheduled Job that
    was running when the demo asked for run 2 makes the requested run wait; it finished
    first, and the demo reported it as run 2 (figures of a snapshot taken during the
    lane's changes) and went on to the next lane while the run it asked for was still to
    come. It now waits for the Job its request started (``status.runRequest``)."""
    env = demo_env(tmp_path, 5000)
    script = (
        "from demo.__main__ import Demo, NAMESPACE\n"
        "from demo.eventlane import run_events\n"
        "demo = Demo(); s3 = demo.cluster(); uri = demo.postgres()\n"
        "demo.operator(uri, s3); demo.tablesync(s3); demo.run_now('bootstrap')\n"
        "run_events(uri, changes=100, delivery=0.95, seed=2, max_id=5000)\n"
        "demo.kubectl('create', 'job', '--from=cronjob/prices', 'prices-scheduled', '-n',"
        " NAMESPACE)  # the schedule fires\n"
        "last = demo.run_now('run 2')\n"
        "print('RUN2', last['jobName'], demo.status()['runRequest']['jobName'])\n")
    try:
        run = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, text=True,
                             capture_output=True, timeout=600, check=False)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        reported, requested = run.stdout.split("RUN2 ")[1].split()
        assert reported == requested, f"run 2 reported {reported}, asked for {requested}"
    finally:
        demo_down(env)


def test_demo_down_leaves_alone_a_process_that_now_has_the_operators_pid(
        tmp_path: Path) -> None:
    """``.demo/operator.pid`` outlives the operator (a reboot, a crash); the pid in it may
    belong to any process by then. ``make demo-down`` (and ``make demo``, which stops the last
    operator first) sent it SIGTERM all the same, as root whatever it was. Only the demo's
    operator is stopped now."""
    state = tmp_path / "demo"
    state.mkdir()
    other = subprocess.Popen(["sleep", "300"])
    try:
        (state / "operator.pid").write_text(str(other.pid))
        env = {**os.environ, "TABLESYNC_DEMO_STATE": str(state), "PYTHONPATH": str(REPO)}
        down = subprocess.run([sys.executable, "-m", "demo", "down"], cwd=REPO, env=env,
                              text=True, capture_output=True, timeout=120, check=False)
        assert down.returncode == 0, down.stdout + down.stderr
        time.sleep(0.5)
        assert other.poll() is None, f"demo down killed pid {other.pid}, not its operator"
    finally:
        other.kill()
        other.wait()


def test_a_run_that_did_not_succeed_stops_the_demo_naming_why() -> None:
    """Before, a failed run (a guard trip, an input error) was printed like any other and
    the demo went on to end "done", exit 0."""
    from demo.__main__ import check_run

    check_run("run 2", {"result": "Succeeded", "reason": "Applied"})
    with pytest.raises(SystemExit) as stop:
        check_run("run 2", {"result": "GuardTripped", "reason": "DeleteGuardTripped",
                            "message": "delta A..B would delete 400 of 5000 rows"})
    assert str(stop.value).startswith(
        "[demo] run 2 ended GuardTripped (DeleteGuardTripped): delta A..B would delete 400")
    assert "make demo-down" in str(stop.value)
