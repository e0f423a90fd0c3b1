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

# shellcheck source=scripts/oci-archive.sh
. "$(dirname "$0")/oci-archive.sh"
oci_archive "$out" "$root" /bin \
  'registry.local/hello:1|["httpd","-f","-p","8080","-h","/www"]|8080' \
  'registry.local/shop:1|["httpd","-f","-p","8080","-h","/shop/frontend"]|8080'
echo "wrote $out (registry.local/hello:1, registry.local/shop:1)"
