"""The image → command map: what a container without ``command`` runs on this machine.

There is no container runtime, so an image's ENTRYPOINT/CMD has to be given here. Used by the
pod runner. Defaults cover the project's two images; ``TABLESYNC_IMAGE_COMMANDS`` (or
``up --image-commands FILE``) names a YAML or JSON file that adds or overrides entries::

    tablesync/job: ["/work/main/.venv/bin/tablesync-job"]        # = ENTRYPOINT
    example/tool:  {entrypoint: ["/usr/bin/tool"], cmd: ["--help"]}

Matching, first hit wins: the image reference loses its digest (``@sha256:…``) and tag
(``:dev``), then it is looked up as is (``tablesync/job``), by its trailing path components
(``ghcr.io/acme/tablesync/job`` → ``tablesync/job``), and by its last component with ``-``
standing for ``/`` (``ghcr.io/acme/tablesync-job`` → ``tablesync/job``).
Container ``command``/``args`` then combine with the entry as Kubernetes combines them with
ENTRYPOINT/CMD.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .settings import VENV


@dataclass(frozen=True)
class ImageEntry:
    """What an image would run: its ENTRYPOINT and CMD."""

    entrypoint: list[str]
    cmd: list[str] = field(default_factory=list)


def default_image_commands() -> dict[str, ImageEntry]:
    """``tablesync/job`` and ``tablesync/operator`` → the console scripts in the repo's .venv;
    a few base images (no ENTRYPOINT, a shell or python as CMD) so ``kubectl run
    --image=busybox -- sh -c '…'`` works as it would with a real runtime."""
    shell = ImageEntry([], ["sh"])
    return {
        "tablesync/job": ImageEntry([str(VENV / "bin" / "tablesync-job")]),
        "tablesync/operator": ImageEntry([str(VENV / "bin" / "tablesync-operator")]),
        "busybox": shell, "alpine": shell, "debian": ImageEntry([], ["bash"]),
        "ubuntu": ImageEntry([], ["bash"]), "python": ImageEntry([], ["python3"]),
    }


def _entry(image: str, raw: Any) -> ImageEntry:
    if isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        return ImageEntry(list(raw))
    if isinstance(raw, dict):
        entrypoint, cmd = raw.get("entrypoint", []), raw.get("cmd", [])
        if isinstance(entrypoint, list) and isinstance(cmd, list):
            return ImageEntry([str(x) for x in entrypoint], [str(x) for x in cmd])
    raise ValueError(f"image command map: entry for {image!r} must be a list of strings or "
                     "{entrypoint: [...], cmd: [...]}")


def load_image_commands(path: Path | None = None) -> dict[str, ImageEntry]:
    """Defaults plus the entries of ``path`` (or ``$TABLESYNC_IMAGE_COMMANDS``) if given.

    Raises ValueError naming the file if it is not a mapping of image → command.
    """
    commands = default_image_commands()
    source = path or (Path(os.environ["TABLESYNC_IMAGE_COMMANDS"])
                      if os.environ.get("TABLESYNC_IMAGE_COMMANDS") else None)
    if source is None:
        return commands
    raw = yaml.safe_load(source.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: expected a mapping of image name to command")
    for image, value in raw.items():
        commands[_strip_reference(str(image))] = _entry(str(image), value)
    return commands


def dump_image_commands(commands: dict[str, ImageEntry]) -> str:
    """JSON form, as the runner reads it back from the state directory."""
    return json.dumps({k: {"entrypoint": v.entrypoint, "cmd": v.cmd} for k, v in commands.items()},
                      indent=2)


def _strip_reference(image: str) -> str:
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name = name[:colon]
    return name


def lookup(commands: dict[str, ImageEntry], image: str) -> ImageEntry | None:
    """The entry for ``image`` by the matching rules in the module docstring, or None."""
    name = _strip_reference(image)
    if name in commands:
        return commands[name]
    parts = name.split("/")
    for start in range(1, len(parts)):
        suffix = "/".join(parts[start:])
        if suffix in commands:
            return commands[suffix]
    dashed = {key.replace("/", "-"): entry for key, entry in commands.items()}
    return dashed.get(parts[-1])


def container_argv(entry: ImageEntry | None, command: list[str], args: list[str]) -> list[str]:
    """Kubernetes' rule: ``command`` replaces ENTRYPOINT (and drops CMD), ``args`` replaces CMD.

    Returns [] when there is nothing to run (no command and no known image).
    """
    if command:
        return [*command, *args]
    if entry is None:
        return []
    return [*entry.entrypoint, *(args or entry.cmd)]
