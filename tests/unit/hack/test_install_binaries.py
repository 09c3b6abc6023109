"""tests/e2e/cluster/install-binaries.sh: which Go it builds the test cluster with.

The script runs for real with an empty cache in a temporary directory, a stand-in ``go`` on
PATH and ``TABLESYNC_GO_ROOT`` pointing at nothing, so it stops before any build.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.services import REPO_ROOT
from tests.unit.hack.test_install_system_deps import executable, fake_go

SCRIPT = REPO_ROOT / "tests" / "e2e" / "cluster" / "install-binaries.sh"


def run_script(tmp_path: Path, go_version: str | None) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if go_version is not None:
        executable(bin_dir / "go", fake_go(go_version))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path),
           "TABLESYNC_CACHE": str(tmp_path / "cache"),
           "TABLESYNC_GO_ROOT": str(tmp_path / "no-go")}
    return subprocess.run(["bash", str(SCRIPT)], env=env, text=True, capture_output=True,
                          timeout=60, check=False)


def test_a_go_older_than_1_21_is_refused_before_building(tmp_path: Path) -> None:
    """Debian 12's golang-go 1.19 knows no GOTOOLCHAIN: the build started and failed minutes
    in with compile errors (`make cluster-binaries` run without `make system-deps`)."""
    run = run_script(tmp_path, "1.19.8")
    assert run.returncode == 2, run.stderr
    assert "Go too old to build the test cluster" in run.stderr
    assert "(1.19.8)" in run.stderr and "make system-deps" in run.stderr
    assert "building" not in run.stderr


def test_no_go_at_all_names_the_make_target(tmp_path: Path) -> None:
    run = run_script(tmp_path, None)
    assert run.returncode == 2, run.stderr
    assert "go is not on PATH: run `make system-deps`" in run.stderr
