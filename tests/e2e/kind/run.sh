#!/usr/bin/env bash
# `make e2e-kind`: the e2e suite (tests/e2e) on a kind cluster instead of the local,
# process-based one. Needs Docker and kind; cannot run on the Docker-less build machines and
# is not part of `make test`.
#
#   1. create the kind cluster (tests/e2e/kind/kind-config.yaml), unless it exists
#   2. build tablesync/operator:dev and tablesync/job:dev, load them (and busybox) into kind
#   3. install MinIO and Postgres (tests/e2e/kind/infra.yaml) and wait for them
#   4. helm install charts/tablesync with the :dev images
#   5. run pytest tests/e2e with TABLESYNC_KUBECONFIG and the TABLESYNC_E2E_* endpoints set
#
# Environment: KIND_CLUSTER (default tablesync-e2e), KEEP_CLUSTER=1 keeps it afterwards.
# Extra arguments go to pytest, e.g. `bash tests/e2e/kind/run.sh -k cronjob`.
set -euo pipefail
cd "$(dirname "$0")/../../.."

CLUSTER=${KIND_CLUSTER:-tablesync-e2e}
KUBECONFIG_FILE=$PWD/.e2e/kind-$CLUSTER.kubeconfig
KUBECTL=$PWD/.venv/bin/kubectl
RELEASE_NS=tablesync-system
log() { printf '[e2e-kind] %s\n' "$*" >&2; }

for tool in docker kind; do
  command -v "$tool" >/dev/null || { log "$tool is not on PATH: make e2e-kind needs it"; exit 2; }
done
[[ -x $KUBECTL ]] || { log "$KUBECTL missing: run make venv"; exit 2; }
HELM=$(command -v helm || true)
[[ -n $HELM ]] || HELM=$(bash tests/e2e/cluster/install-binaries.sh | tail -1)/helm

mkdir -p .e2e
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" --config tests/e2e/kind/kind-config.yaml \
    --kubeconfig "$KUBECONFIG_FILE" --wait 120s
else
  kind get kubeconfig --name "$CLUSTER" > "$KUBECONFIG_FILE"
fi
[[ ${KEEP_CLUSTER:-0} == 1 ]] || trap 'log "deleting $CLUSTER"; kind delete cluster --name "$CLUSTER"' EXIT
export KUBECONFIG=$KUBECONFIG_FILE

log "building and loading images"
docker build -t tablesync/operator:dev -f Dockerfile .
docker build -t tablesync/job:dev -f job-image/Dockerfile .
docker pull -q busybox:1.36
kind load docker-image --name "$CLUSTER" tablesync/operator:dev tablesync/job:dev busybox:1.36

log "installing MinIO and Postgres"
"$KUBECTL" apply -f tests/e2e/kind/infra.yaml
"$KUBECTL" -n tablesync-e2e rollout status deployment/minio deployment/postgres --timeout=300s

log "installing the chart"
"$HELM" upgrade --install tablesync charts/tablesync --namespace "$RELEASE_NS" \
  --create-namespace --set image.tag=dev --set job.image.tag=dev --wait --timeout 5m

export TABLESYNC_KUBECONFIG=$KUBECONFIG_FILE
export TABLESYNC_E2E_RELEASE=$RELEASE_NS/tablesync
export TABLESYNC_E2E_MINIO_ENDPOINT=http://127.0.0.1:30900
export TABLESYNC_E2E_MINIO_IN_CLUSTER_ENDPOINT=http://minio.tablesync-e2e.svc:9000
export TABLESYNC_E2E_POSTGRES_HOSTPORT=127.0.0.1:30432
export TABLESYNC_E2E_POSTGRES_IN_CLUSTER_HOSTPORT=postgres.tablesync-e2e.svc:5432
log "running the e2e suite"
# test_harness_cli.py starts a second, process-based cluster: it tests the local harness only.
.venv/bin/pytest tests/e2e -q -p no:cacheprovider \
  --ignore=tests/e2e/harness/test_harness_cli.py "$@"
