#!/usr/bin/env bash
# Builds Skiff and starts a single-node cluster that serves the example app: the API server
# with the embedded SQLite store in ./.skiff (or $SKIFF_DATA_DIR) and, as root, the embedded
# node agent, so this machine runs the pods as containers. The example images are built from
# this machine's busybox-static (no registry, no internet) and imported, and examples/shop/ is
# applied: frontend -> api -> store, three services that call each other by name over the
# cluster DNS, the frontend on a NodePort: http://127.0.0.1:30080/.
# The server keeps running in the foreground; Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/skiff-target}"
data="${SKIFF_DATA_DIR:-$PWD/.skiff}"
port="${SKIFF_PORT:-6443}"
if [ "$(id -u)" != 0 ]; then
  echo "warning: not root: the control plane runs, but no pods (run as root to serve the app)" >&2
fi
need=()
command -v nft >/dev/null 2>&1 || need+=(nftables)
test -x /bin/busybox || need+=(busybox-static)
if [ "${#need[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -p skiff
bin="$CARGO_TARGET_DIR/release/skiff"
mkdir -p "$data"
./scripts/example-image.sh "$data/example-images.tar"
"$bin" image --data-dir "$data" import "$data/example-images.tar"
"$bin" server --data-dir "$data" --https-listen-port "$port" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM
export KUBECONFIG="$data/kubeconfig.yaml"
for _ in $(seq 1 100); do
  [ -s "$KUBECONFIG" ] && kubectl get --raw /readyz >/dev/null 2>&1 && break
  sleep 0.1
done
kubectl apply -f examples/shop/
if [ "$(id -u)" = 0 ]; then
  for d in store api frontend; do kubectl rollout status "deployment/$d" --timeout=120s; done
  for _ in $(seq 1 50); do
    curl -fsS http://127.0.0.1:30080/ 2>/dev/null | grep -q '"service":"store"' && break
    sleep 0.2
  done
  echo
  curl -fsS http://127.0.0.1:30080/
fi
kubectl get pods,svc -o wide
echo
echo "Skiff is running. The shop: http://127.0.0.1:30080/ (frontend -> api -> store by DNS name)"
echo "In another shell:"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  kubectl get all; kubectl logs deploy/frontend; kubectl exec -it deploy/frontend -- sh"
echo "  kubectl exec deploy/frontend -- nslookup api     # the cluster DNS"
echo "  kubectl apply -f examples/hello.yaml             # another app, on http://127.0.0.1:30081/"
echo "examples/nginx.yaml (a StatefulSet with volumes) needs an nginx image: pull it through"
echo "a mirror (--private-registry) or 'skiff image import' one."
wait $pid
