#!/usr/bin/env bash
# Builds the example app's image without any registry or internet: an OCI archive of
# `registry.local/hello:1` made from this machine's busybox-static (/bin/busybox, Debian's
# busybox-static package), serving a page with busybox httpd. Import it with
# `skiff image import --data-dir DATA FILE` (the quickstart does).
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
for a in sh httpd hostname cat echo ls wget sleep env date uname; do ln -s busybox "$root/bin/$a"; done
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
printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["httpd","-f","-p","8080","-h","/www"],"ExposedPorts":{"8080/tcp":{}}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$arch" "$diff_id" >"$work/config.json"
config="$(sha256sum "$work/config.json" | cut -d' ' -f1)"
cp "$work/config.json" "$blobs/$config"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
  "$config" "$(stat -c %s "$work/config.json")" "$layer" "$layer_size" >"$work/manifest.json"
manifest="$(sha256sum "$work/manifest.json" | cut -d' ' -f1)"
cp "$work/manifest.json" "$blobs/$manifest"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"registry.local/hello:1"}}]}' \
  "$manifest" "$(stat -c %s "$work/manifest.json")" >"$work/layout/index.json"
tar -C "$work/layout" -cf "$out" oci-layout index.json blobs
echo "wrote $out (registry.local/hello:1)"
