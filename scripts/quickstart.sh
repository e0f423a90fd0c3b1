#!/usr/bin/env bash
# Builds Skiff and starts a single-node cluster that serves the example app: the API server
# with the embedded SQLite store in ./.skiff (or $SKIFF_DATA_DIR) and, as root, the embedded
# node agent, so this machine runs the pods as containers. The app's image is built from this
# machine's busybox-static (no registry, no internet), imported, and examples/hello.yaml is
# applied: two replicas behind a NodePort service on http://127.0.0.1:30080/.
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
./scripts/example-image.sh "$data/hello-image.tar"
"$bin" image --data-dir "$data" import "$data/hello-image.tar"
"$bin" server --data-dir "$data" --https-listen-port "$port" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM
export KUBECONFIG="$data/kubeconfig.yaml"
for _ in $(seq 1 100); do
  [ -s "$KUBECONFIG" ] && kubectl get --raw /readyz >/dev/null 2>&1 && break
  sleep 0.1
done
kubectl apply -f examples/hello.yaml
if [ "$(id -u)" = 0 ]; then
  kubectl rollout status deployment/hello --timeout=120s
  for _ in $(seq 1 50); do
    curl -fsS http://127.0.0.1:30080/ >/dev/null 2>&1 && break
    sleep 0.2
  done
  echo
  curl -fsS http://127.0.0.1:30080/ | sed -n 's:.*<h1>\(.*\)</h1>.*:\1:p'
  curl -fsS http://127.0.0.1:30080/cgi-bin/whoami
fi
kubectl get pods,svc -o wide
echo
echo "Skiff is running. The app: http://127.0.0.1:30080/ (which pod: /cgi-bin/whoami)"
echo "In another shell:"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  kubectl get all; kubectl logs deploy/hello; kubectl exec -it deploy/hello -- sh"
echo "examples/nginx.yaml (a StatefulSet with volumes) needs an nginx image: pull it through"
echo "a mirror (--private-registry) or 'skiff image import' one."
wait $pid
