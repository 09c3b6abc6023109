"""hack/install-system-deps.sh: which Go it takes, and where from.

The script runs for real, with stand-ins for the two things a test must not touch: apt (a
``apt-get`` that records what it was asked, an ``apt-cache`` that names Debian 12's golang-go)
and the Go module proxy (a toolchain module's zip under ``file://``), and with
``TABLESYNC_GO_ROOT`` in a temporary directory instead of /usr/local/go.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import subprocess
import zipfile
from pathlib import Path

from tests.support.services import REPO_ROOT

SCRIPT = REPO_ROOT / "hack" / "install-system-deps.sh"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def executable(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def fake_go(version: str) -> str:
    return f'#!/bin/sh\n[ "$1 $2" = "env GOVERSION" ] && echo go{version}\n'


def go_proxy(tmp_path: Path) -> tuple[Path, str]:
    """A Go module proxy stand-in holding one toolchain, go1.99.1 for this machine, as the
    real one holds them (golang.org/toolchain, files under the module's path, no modes);
    with the zip's sha256."""
    site = tmp_path / "proxy"
    folder = site / "golang.org" / "toolchain" / "@v"
    folder.mkdir(parents=True)
    buffer = io.BytesIO()
    prefix = f"golang.org/toolchain@v0.0.1-go1.99.1.linux-{ARCH}/"
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(prefix + "bin/go", fake_go("1.99.1"))
        archive.writestr(prefix + "VERSION", "go1.99.1\n")
    (folder / f"v0.0.1-go1.99.1.linux-{ARCH}.zip").write_bytes(buffer.getvalue())
    return site, hashlib.sha256(buffer.getvalue()).hexdigest()


def run_script(tmp_path: Path, proxy: tuple[Path, str],
               path_go: str | None) -> subprocess.CompletedProcess[str]:
    """Run the script with Debian 12's apt (golang-go 1.19) and, if given, that Go on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt_log = tmp_path / "apt-get.log"
    executable(bin_dir / "apt-get", f'#!/bin/sh\necho "$@" >> {apt_log}\n')
    executable(bin_dir / "apt-cache",
               "#!/bin/sh\necho 'golang-go:'\necho '  Installed: (none)'\n"
               "echo '  Candidate: 2:1.19~1'\n")
    executable(bin_dir / "sudo", '#!/bin/sh\nexec "$@"\n')
    if path_go is not None:
        executable(bin_dir / "go", fake_go(path_go))
    # the real PATH for python3, sort, awk..., without any real Go
    keep = [d for d in os.environ["PATH"].split(os.pathsep)
            if d and not (Path(d) / "go").exists()]
    env = {**os.environ, "PATH": os.pathsep.join([str(bin_dir), *keep]),
           "TABLESYNC_GO_ROOT": str(tmp_path / "usr-local-go"),
           "TABLESYNC_GO_PROXY": proxy[0].as_uri(), "TABLESYNC_GO_TOOLCHAIN": "go1.99.1",
           "TABLESYNC_GO_SHA256": proxy[1]}
    return subprocess.run(["bash", str(SCRIPT)], env=env, text=True, capture_output=True,
                          check=False, timeout=120)


def apt_requests(tmp_path: Path) -> str:
    log = tmp_path / "apt-get.log"
    return log.read_text() if log.exists() else ""


def test_go_older_than_1_21_is_replaced_by_the_pinned_toolchain_not_debian_12s_golang_go(
    tmp_path: Path,
) -> None:
    """Debian 12's golang-go is 1.19: it cannot build etcd or Kubernetes and knows no
    GOTOOLCHAIN, so `make demo` failed minutes later with compile errors deep in etcd."""
    proc = run_script(tmp_path, go_proxy(tmp_path), path_go="1.19.8")
    assert proc.returncode == 0, proc.stderr
    assert "golang-go" not in apt_requests(tmp_path)
    go = tmp_path / "usr-local-go" / "bin" / "go"
    assert subprocess.run([str(go), "env", "GOVERSION"], capture_output=True, text=True,
                          check=True).stdout.strip() == "go1.99.1"


def test_no_go_at_all_and_an_old_golang_go_also_takes_the_pinned_toolchain(tmp_path: Path) -> None:
    proc = run_script(tmp_path, go_proxy(tmp_path), path_go=None)
    assert proc.returncode == 0, proc.stderr
    assert "golang-go" not in apt_requests(tmp_path)
    assert (tmp_path / "usr-local-go" / "bin" / "go").exists()


def test_a_go_that_can_build_the_cluster_is_kept(tmp_path: Path) -> None:
    proc = run_script(tmp_path, go_proxy(tmp_path), path_go="1.22.2")
    assert proc.returncode == 0, proc.stderr
    assert "golang-go" not in apt_requests(tmp_path)
    assert not (tmp_path / "usr-local-go").exists()


def test_an_archive_whose_checksum_differs_is_not_installed(tmp_path: Path) -> None:
    proc = run_script(tmp_path, (go_proxy(tmp_path)[0], "0" * 64), path_go=None)
    assert proc.returncode != 0
    assert "sha256" in proc.stderr and "pinned; nothing installed" in proc.stderr
    assert not (tmp_path / "usr-local-go").exists()
