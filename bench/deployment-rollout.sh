#!/usr/bin/env bash
# Time from `kubectl create deployment --replicas=N` to all N pods Running/available on
# simulated nodes, against a baseline measured in the same run on the same server: creating the
# same N pods directly (one `kubectl apply` of a List) and waiting until they all run.
# Usage: bench/deployment-rollout.sh [SKIFF_BINARY] [REPLICAS] [NODES] [RUNS]
set -euo pipefail
bin="${1:-${CARGO_TARGET_DIR:-/var/tmp/skiff-target}/release/skiff}"
n="${2:-1000}"
nodes="${3:-20}"
runs="${4:-3}"
kdir="$(dirname "$(readlink -f "$(command -v kubectl)")")"
k="$kdir/kubectl.1.33"
dir="$(mktemp -d)"
port=$((20000 + RANDOM % 10000))
# Simulated nodes only: no local agent, which would make real interfaces, routes and mounts on
# this machine and take pods it cannot run (the images are not real).
"$bin" server --disable-agent --data-dir "$dir" --https-listen-port "$port" --bind-address 127.0.0.1 --simulated-nodes "$nodes" >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
export KUBECONFIG="$dir/kubeconfig.yaml"
for _ in $(seq 1 100); do [ -s "$KUBECONFIG" ] && $k get --raw /readyz >/dev/null 2>&1 && break; sleep 0.1; done
now() { date +%s.%N; }
running() { $k get pods -n "$1" --field-selector=status.phase=Running --no-headers 2>/dev/null | wc -l; }
deploy=(); base=()
for r in $(seq 1 "$runs"); do
  ns="d$r"; $k create ns "$ns" >/dev/null
  t0=$(now)
  $k -n "$ns" create deployment big --image=registry.local/big:1 --replicas="$n" >/dev/null
  $k -n "$ns" rollout status deployment/big --timeout=600s >/dev/null
  t1=$(now); deploy+=("$(echo "$t1 - $t0" | bc)")
  $k delete ns "$ns" --wait=false >/dev/null
  ns="p$r"; $k create ns "$ns" >/dev/null
  list=$(python3 -c "import json,sys; print(json.dumps({'apiVersion':'v1','kind':'List','items':[{'apiVersion':'v1','kind':'Pod','metadata':{'name':f'p{i}','labels':{'app':'p'}},'spec':{'containers':[{'name':'c','image':'registry.local/big:1'}]}} for i in range($n)]}))")
  t0=$(now)
  echo "$list" | $k -n "$ns" apply -f - >/dev/null
  until [ "$(running "$ns")" -ge "$n" ]; do sleep 0.05; done
  t1=$(now); base+=("$(echo "$t1 - $t0" | bc)")
  # Free the nodes' pod capacity for the next run.
  $k delete ns "$ns" >/dev/null
  $k delete ns "d$r" >/dev/null 2>&1 || true
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "replicas=$n nodes=$nodes runs=$runs"
echo "deployment to all available (s): ${deploy[*]}  median $(median "${deploy[@]}")"
echo "baseline: $n bare pods created by one kubectl apply to all Running (s): ${base[*]}  median $(median "${base[@]}")"
