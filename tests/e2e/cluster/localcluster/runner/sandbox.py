"""Container start-up inside a fresh mount namespace: mount the volumes, chroot, exec the command.

The pod runner starts every container as
``unshare --mount --uts --propagation private -- python -I -S sandbox.py PLAN.json`` with
the container's environment; this script (stdlib only, so it starts in milliseconds) sets the
host name to the pod's, then:

1. mounts a tmpfs on ``plan.root`` and bind-mounts every entry of the host's ``/`` into it
   (directories recursively, symlinks copied), so the new root looks like the host;
2. bind-mounts each volume (and the container's termination-log file) at its ``mountPath``.
   A missing mount point is created without touching the host: the nearest existing
   directory is first *shadowed* — replaced, in this namespace only, by a tmpfs that holds
   bind mounts of its original entries — and the missing path is created in that tmpfs;
3. re-exposes the ``image_paths`` (the project and its Python) where a volume hid them, the way
   an image's files stay visible beside its volumes;
4. ``chroot``s into the new root, ``chdir``s to the working directory and ``exec``s the command.

So the command keeps the container's pid: the runner's signals reach it directly. If setting
up fails, or the command cannot be executed, the reason goes to ``plan.error_file`` and the
exit code is 128 (the runner reports it as ``StartError``, like a container runtime).
Everything mounted here vanishes with the namespace when the container's processes exit.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import stat
import sys
from typing import Any

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MNT_DETACH = 2
START_ERROR_EXIT = 128

_libc = ctypes.CDLL(None, use_errno=True)


class SandboxError(Exception):
    """Setting up the container's file system failed."""


def _mount(source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    rc = _libc.mount(
        None if source is None else source.encode(), target.encode(),
        None if fstype is None else fstype.encode(), ctypes.c_ulong(flags),
        None if data is None else data.encode(),
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"mount {source} -> {target}: {os.strerror(err)}")


def _umount_detach(target: str) -> None:
    _libc.umount2(target.encode(), MNT_DETACH)


class Sandbox:
    """Builds the container's root under ``root``; ``owned`` are directories on our tmpfs."""

    def __init__(self, root: str, scratch: str) -> None:
        self.root = root.rstrip("/")
        self.scratch = scratch
        self.owned: set[str] = set()
        self._shadows = 0

    def build_root(self) -> None:
        _mount("tmpfs", self.root, "tmpfs", 0, "mode=0755")
        self.owned.add(self.root)
        self._mirror("/", self.root)
        # The recursive bind of the host directory holding our root copied our tmpfs into
        # itself (at root/<root>): drop that copy so nothing walks in circles.
        _umount_detach(self.root + self.root)

    def _mirror(self, source_dir: str, target_dir: str) -> None:
        """Recreate ``source_dir``'s entries in ``target_dir`` as bind mounts and symlinks."""
        for name in sorted(os.listdir(source_dir)):
            src = os.path.join(source_dir, name)
            dst = os.path.join(target_dir, name)
            try:
                st = os.lstat(src)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(src), dst)
            elif stat.S_ISDIR(st.st_mode):
                os.mkdir(dst, stat.S_IMODE(st.st_mode))
                _mount(src, dst, None, MS_BIND | MS_REC)
            else:
                with open(dst, "w"):
                    pass
                _mount(src, dst, None, MS_BIND)

    def resolve(self, path: str) -> str:
        """Host path inside our root for container path ``path``, following symlinks as chroot."""
        parts = [p for p in path.split("/") if p and p != "."]
        current = self.root
        links = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if current != self.root:
                    current = os.path.dirname(current)
                continue
            candidate = current + "/" + part
            if os.path.islink(candidate):
                links += 1
                if links > 40:
                    raise SandboxError(f"too many symlinks resolving {path}")
                target = os.readlink(candidate)
                if target.startswith("/"):
                    current = self.root
                parts = [p for p in target.split("/") if p and p != "."] + parts
                continue
            current = candidate
        return current

    def _shadow(self, directory: str) -> None:
        """Replace ``directory`` (in this namespace) by a tmpfs mirroring its entries."""
        self._shadows += 1
        staging = os.path.join(self.scratch, str(self._shadows))
        os.makedirs(staging, exist_ok=True)
        mode = stat.S_IMODE(os.stat(directory).st_mode)
        _mount("tmpfs", staging, "tmpfs", 0, f"mode={mode:o}")
        self._mirror(directory, staging)
        _mount(staging, directory, None, MS_MOVE)
        self.owned.add(directory)

    def ensure(self, path: str, is_dir: bool) -> str:
        """Make container path ``path`` exist (a directory or an empty file); its host path."""
        target = self.resolve(path)
        if os.path.lexists(target):
            return target
        missing: list[str] = []
        ancestor = target
        while not os.path.lexists(ancestor):
            missing.insert(0, os.path.basename(ancestor))
            ancestor = os.path.dirname(ancestor)
        if not os.path.isdir(ancestor):
            raise SandboxError(f"cannot create {path}: {ancestor} is not a directory")
        if ancestor not in self.owned:
            self._shadow(ancestor)
        current = ancestor
        for index, name in enumerate(missing):
            current = os.path.join(current, name)
            if index < len(missing) - 1 or is_dir:
                os.mkdir(current, 0o755)
                self.owned.add(current)
            else:
                with open(current, "w"):
                    pass
        return target

    def bind(self, source: str, path: str, read_only: bool) -> None:
        """Bind-mount host ``source`` at container path ``path``."""
        if not os.path.exists(source):
            raise SandboxError(f"volume source {source} does not exist")
        source_is_dir = os.path.isdir(source)
        target = self.ensure(path, source_is_dir)
        if os.path.isdir(target) != source_is_dir:
            kind = "directory" if source_is_dir else "file"
            raise SandboxError(f"cannot mount a {kind} at {path}: it exists as the other kind")
        _mount(source, target, None, MS_BIND | MS_REC)
        if read_only:
            _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def _same_file(host_path: str, inside: str) -> bool:
    try:
        a, b = os.stat(host_path), os.stat(inside)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def run(plan: dict[str, Any]) -> None:
    """Set up the file system described by ``plan`` and exec its command (does not return)."""
    if plan.get("hostname"):  # we are in our own UTS namespace too
        socket.sethostname(plan["hostname"])
    sandbox = Sandbox(plan["root"], plan["scratch"])
    sandbox.build_root()
    mounts = sorted(plan["mounts"], key=lambda m: len([p for p in m["path"].split("/") if p]))
    for mount in mounts:
        sandbox.bind(mount["source"], mount["path"], bool(mount.get("read_only")))
    for path in plan.get("image_paths", []):
        if not _same_file(path, sandbox.resolve(path)):
            sandbox.bind(path, path, read_only=False)
    workdir = plan.get("workdir") or "/"
    sandbox.ensure(workdir, True)
    os.chroot(sandbox.root)
    os.chdir(workdir)
    argv = plan["argv"]
    try:
        os.execvpe(argv[0], argv, os.environ)
    except OSError as err:
        raise SandboxError(f'exec: "{argv[0]}": {err.strerror}') from err


def main() -> None:
    with open(sys.argv[1]) as handle:
        plan = json.load(handle)
    # Opened before the chroot (a volume may hide its path afterwards); closed by the exec.
    error_fd = os.open(plan["error_file"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC,
                       0o644)
    try:
        run(plan)
    except (SandboxError, OSError) as err:
        message = str(err) or err.__class__.__name__
        os.write(error_fd, message.encode())
        print(f"sandbox: {message}", file=sys.stderr)
        sys.exit(START_ERROR_EXIT)


if __name__ == "__main__":
    main()
