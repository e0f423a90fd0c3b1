#!/usr/bin/env bash
# Builds Skiff, starts a single-node control plane with the embedded SQLite store in
# ./.skiff (or $SKIFF_DATA_DIR), applies examples/nginx.yaml and shows what the API holds.
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
echo "Pods stay Pending until the node agent lands; 'skiff server --simulated-nodes 2' shows the"
echo "controllers and scheduler at work on simulated nodes (no containers)."
wait $pid
