"""The pod runner: a kubelet stand-in that runs pods as local processes.

``python -m localcluster.runner --state DIR`` (spawned by ``controlplane.up``). Modules, each
importing only those listed before it: ``sandbox`` (standalone, runs inside the container's
mount namespace), ``podenv`` (env and fieldRefs), ``volumes`` (volume directories),
``containers`` (one process per container run), ``node`` (Node + Lease), ``pods`` (one pod's
life), ``logserver`` (``/containerLogs``), ``loop`` (watch and dispatch).
"""

from __future__ import annotations
