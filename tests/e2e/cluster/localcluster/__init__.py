"""A real Kubernetes control plane on loopback, without Docker, for the tablesync e2e tests.

Started by ``python -m localcluster up`` (the Makefile's ``cluster-up``) and by the ``cluster``
fixture in ``tests/e2e/conftest.py``. Layers, each importing only the ones above it:

* ``settings``   — paths and defaults (repository root, state directory, node name).
* ``procs``      — start a background process and stop it again by process id.
* ``pki``        — a throwaway certificate authority and keys made with ``openssl``.
* ``kubeapi``    — a tiny JSON client for the API server (the control plane and runner use it).
* ``state``      — ``state.json``: what ``up`` started, read by ``down`` / ``status`` / tests.
* ``images``     — the image → command map for containers that give no ``command``.
* ``controlplane`` — ``up()`` / ``down()`` / ``status()`` of etcd, kube-apiserver,
  kube-controller-manager, MinIO and the pod runner.
* ``cronjobs``   — trigger a CronJob now, as ``kubectl create job --from=cronjob/NAME`` does.
* ``logs``       — read a container's log file.
* ``runner``     — the pod runner (a kubelet stand-in) that runs pods as local processes.
"""

from __future__ import annotations
