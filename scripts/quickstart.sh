#!/usr/bin/env bash
# Builds Skiff and starts a single-node cluster that serves the example app: the API server
# with the embedded SQLite store in ./.skiff (or $SKIFF_DATA_DIR) and, as root, the embedded
# node agent, so this machine runs the pods as containers. The example images are built from
# this machine's busybox-static (no registry, no internet) and imported, and examples/shop/ is
# applied: frontend -> api -> store, three services that call each other by name over the
# cluster DNS, the frontend on a NodePort: http://127.0.0.1:30080/. examples/nginx.yaml (a
# StatefulSet of the real nginx, `image: nginx:latest`) works too: its image is built from
# Debian's nginx package (scripts/nginx-image.sh) and served by a registry on 127.0.0.1:5000
# that mirrors docker.io (registries.yaml in the data dir).
# The server keeps running in the foreground; Ctrl-C stops it (and the registry).
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
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
if [ "${#need[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -p skiff
bin="$CARGO_TARGET_DIR/release/skiff"
mkdir -p "$data"
./scripts/example-image.sh "$data/example-images.tar"
"$bin" image --data-dir "$data" import "$data/example-images.tar"
# A registry on loopback mirrors docker.io for nginx:latest (no internet: the image is built here).
mirror=""
if command -v docker-registry >/dev/null 2>&1 && command -v skopeo >/dev/null 2>&1 \
  && { [ -s "$data/nginx-image.tar" ] || ./scripts/nginx-image.sh "$data/nginx-image.tar"; }; then
  mkdir -p "$data/registry"
  printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:5000\n' \
    "$data/registry" >"$data/registry.yml"
  docker-registry serve "$data/registry.yml" >"$data/registry.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 1 50); do curl -fsS http://127.0.0.1:5000/v2/ >/dev/null 2>&1 && break; sleep 0.1; done
  if skopeo copy -q --dest-tls-verify=false "oci-archive:$data/nginx-image.tar:docker.io/library/nginx:latest" \
    docker://127.0.0.1:5000/library/nginx:latest; then
    printf 'mirrors:\n  docker.io:\n    endpoint:\n      - http://127.0.0.1:5000\n' >"$data/registries.yaml"
    mirror="--private-registry $data/registries.yaml"
  else
    echo "note: pushing nginx to the registry on 127.0.0.1:5000 failed (see $data/registry.log)" >&2
  fi
else
  echo "note: no nginx image (needs docker-registry, skopeo and Debian's package mirror); examples/nginx.yaml will not pull" >&2
fi
# shellcheck disable=SC2086 # $mirror is two words or none
"$bin" server --data-dir "$data" --https-listen-port "$port" $mirror &
pid=$!
trap 'kill $pid ${registry_pid:-} 2>/dev/null; wait $pid 2>/dev/null' EXIT INT TERM
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
echo "  kubectl apply -f examples/nginx.yaml             # nginx StatefulSet; its claims name the"
echo "  StorageClass managed-nfs-storage: until it exists they stay Pending (kubectl describe pvc)."
echo "  Make it with Skiff's local-path provisioner:"
echo "    kubectl create -f - <<<'{\"apiVersion\":\"storage.k8s.io/v1\",\"kind\":\"StorageClass\",\"metadata\":{\"name\":\"managed-nfs-storage\"},\"provisioner\":\"skiff.dev/local-path\"}'"
wait $pid
