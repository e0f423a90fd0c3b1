#!/usr/bin/env bash
# Builds Skiff, starts a single-node cluster (the API server with the embedded SQLite store in
# ./.skiff or $SKIFF_DATA_DIR, and, as root, the embedded node agent: this machine runs pods as
# containers), applies examples/nginx.yaml and shows what the API holds.
# The server keeps running in the foreground; Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/skiff-target}"
data="${SKIFF_DATA_DIR:-$PWD/.skiff}"
port="${SKIFF_PORT:-6443}"
cargo build --release -p skiff
bin="$CARGO_TARGET_DIR/release/skiff"
"$bin" server --data-dir "$data" --https-listen-port "$port" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM
export KUBECONFIG="$data/kubeconfig.yaml"
for _ in $(seq 1 100); do
  [ -s "$KUBECONFIG" ] && kubectl get --raw /readyz >/dev/null 2>&1 && break
  sleep 0.1
done
kubectl apply -f examples/nginx.yaml
kubectl get svc,statefulset -o wide
echo
echo "Skiff is running. In another shell:"
echo "  export KUBECONFIG=$KUBECONFIG"
echo "  kubectl get all"
echo "Pods run as containers on this machine when Skiff runs as root. Images come from registries"
echo "(see --private-registry) or 'skiff image import'; without one, nginx:latest shows ErrImagePull."
echo "'skiff server --simulated-nodes 2' shows the controllers and scheduler on simulated nodes."
wait $pid
