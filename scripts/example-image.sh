#!/usr/bin/env bash
# Builds the example apps' images without any registry or internet: an OCI archive of
# `registry.local/hello:1` (examples/hello.yaml) and `registry.local/shop:1` (examples/shop/),
# made from this machine's busybox-static (/bin/busybox, Debian's busybox-static package) and
# served by busybox httpd. Both share one layer. Import them with
# `skiff image import --data-dir DATA FILE` (the quickstart does).
#
# The shop's services talk REST (JSON over HTTP) to each other by their service names, resolved
# by the cluster DNS: frontend -> http://api/cgi-bin/catalog -> http://store/cgi-bin/items. The HTTP client is
# busybox nc (Debian's busybox-static wget crashes on start).
#
# Usage: scripts/example-image.sh OUT.tar
set -euo pipefail
out="${1:?usage: $0 OUT.tar}"
busybox=/bin/busybox
[ -x "$busybox" ] && "$busybox" --list >/dev/null 2>&1 || {
  echo "$busybox (busybox-static) is needed: apt-get install busybox-static" >&2
  exit 1
}
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/www"
cp "$busybox" "$root/bin/busybox"
for a in sh httpd hostname cat echo ls wget nc nslookup sed printf sleep env date uname; do ln -s busybox "$root/bin/$a"; done
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
cat >"$root/www/index.html" <<'HTML'
<!doctype html>
<title>Hello from Skiff</title>
<h1>Hello from Skiff</h1>
<p>This page is served by busybox httpd in a pod, through a NodePort service.</p>
HTML
# A CGI script shows which pod answered (the service spreads connections over the replicas).
mkdir -p "$root/www/cgi-bin"
cat >"$root/www/cgi-bin/whoami" <<'CGI'
#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
echo "pod $(hostname)"
CGI
chmod 755 "$root/www/cgi-bin/whoami"

# The shop: one document root per service, each with a /healthz for readiness probes.
shop="$root/shop"
mkdir -p "$shop/frontend/cgi-bin" "$shop/api/cgi-bin" "$shop/store/cgi-bin"
for svc in frontend api store; do echo ok >"$shop/$svc/healthz"; done
# GET http://HOST/PATH with the body only; the host name goes through the pod's resolver.
cat >"$root/bin/http-get" <<'SH'
#!/bin/sh
printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$2" "$1" | nc -w 5 "$1" 80 | sed '1,/^\r*$/d'
SH
chmod 755 "$root/bin/http-get"
cat >"$shop/store/cgi-bin/items" <<'CGI'
#!/bin/sh
# GET /cgi-bin/items: the store's stock, as JSON.
printf 'Content-Type: application/json\r\n\r\n'
printf '{"service":"store","pod":"%s","items":[{"id":1,"name":"kayak","price":499,"stock":3},{"id":2,"name":"paddle","price":59,"stock":12},{"id":3,"name":"life jacket","price":89,"stock":7}]}\n' "$(hostname)"
CGI
cat >"$shop/api/cgi-bin/catalog" <<'CGI'
#!/bin/sh
# GET /cgi-bin/catalog: asks the store service, by name, and says who answered.
printf 'Content-Type: application/json\r\n\r\n'
store="$(http-get store /cgi-bin/items)"
printf '{"service":"api","pod":"%s","called":"http://store/cgi-bin/items","store":%s}\n' "$(hostname)" "${store:-null}"
CGI
cat >"$shop/frontend/cgi-bin/index.cgi" <<'CGI'
#!/bin/sh
# GET /: the shop page, from the api service (which asks the store service).
printf 'Content-Type: text/plain\r\n\r\n'
catalog="$(http-get api /cgi-bin/catalog)"
echo "Skiff shop: served by frontend pod $(hostname)"
echo "frontend -> http://api/cgi-bin/catalog (api.$(sed -n 's/^search \([^ ]*\).*/\1/p' /etc/resolv.conf), found by the cluster DNS)"
if [ -n "$catalog" ]; then
  echo "$catalog"
else
  echo "the api service did not answer"
fi
CGI
chmod 755 "$shop"/*/cgi-bin/*

blobs="$work/layout/blobs/sha256"
mkdir -p "$blobs"
# The layer: a reproducible gzip tarball of the root filesystem.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2026-01-01 00:00Z' -C "$root" -cf "$work/layer.tar" .
diff_id="$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
gzip -n -c "$work/layer.tar" >"$work/layer.tar.gz"
layer="$(sha256sum "$work/layer.tar.gz" | cut -d' ' -f1)"
layer_size="$(stat -c %s "$work/layer.tar.gz")"
cp "$work/layer.tar.gz" "$blobs/$layer"
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) arch="$(uname -m)" ;;
esac
# image NAME CMD-JSON: a config and manifest over the shared layer; prints the index entry.
image() {
  local name="$1" cmd="$2" config manifest
  printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":%s,"ExposedPorts":{"8080/tcp":{}}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$arch" "$cmd" "$diff_id" >"$work/config.json"
  config="$(sha256sum "$work/config.json" | cut -d' ' -f1)"
  cp "$work/config.json" "$blobs/$config"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config" "$(stat -c %s "$work/config.json")" "$layer" "$layer_size" >"$work/manifest.json"
  manifest="$(sha256sum "$work/manifest.json" | cut -d' ' -f1)"
  cp "$work/manifest.json" "$blobs/$manifest"
  printf '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}' \
    "$manifest" "$(stat -c %s "$work/manifest.json")" "$name"
}
hello="$(image registry.local/hello:1 '["httpd","-f","-p","8080","-h","/www"]')"
shop_image="$(image registry.local/shop:1 '["httpd","-f","-p","8080","-h","/shop/frontend"]')"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"
printf '{"schemaVersion":2,"manifests":[%s,%s]}' "$hello" "$shop_image" >"$work/layout/index.json"
tar -C "$work/layout" -cf "$out" oci-layout index.json blobs
echo "wrote $out (registry.local/hello:1, registry.local/shop:1)"
