"""``python -m localcluster.runner --state DIR``: run the pod runner of the cluster in DIR.

Spawned by ``controlplane.up``; reads ``DIR/state.json`` and ``DIR/image-commands.json``.
Logs to stderr (``up`` sends it to ``DIR/logs/runner.log``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..images import ImageEntry, default_image_commands
from ..state import ClusterState
from .loop import Runner


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m localcluster.runner")
    parser.add_argument("--state", type=Path, required=True, help="the cluster's state directory")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    state = ClusterState.load(args.state)
    commands = default_image_commands()
    commands_file = args.state / "image-commands.json"
    if commands_file.exists():
        raw = json.loads(commands_file.read_text())
        commands = {k: ImageEntry(v["entrypoint"], v.get("cmd", [])) for k, v in raw.items()}
    Runner(state, commands).run()


if __name__ == "__main__":
    main()
