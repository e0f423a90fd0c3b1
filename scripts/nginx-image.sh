#!/usr/bin/env bash
# Builds `docker.io/library/nginx:latest` for examples/nginx.yaml without any image registry:
# the real nginx of Debian's `nginx` package (fetched with `apt-get download` and unpacked,
# never installed: nothing starts on this machine), the shared libraries it links from this
# machine, and busybox-static for a shell. It serves /usr/share/nginx/html on port 80 and logs
# to stdout/stderr, as the official image does. The quickstart pushes it to a registry on
# loopback that mirrors docker.io, so `image: nginx:latest` (pull policy Always) pulls it.
#
# Usage: scripts/nginx-image.sh OUT.tar
set -euo pipefail
out="$(realpath -m "${1:?usage: $0 OUT.tar}")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download nginx nginx-common >/dev/null 2>"$work/apt.log") || {
  cat "$work/apt.log" >&2
  echo "apt-get download nginx failed (the Debian package mirror is needed once)" >&2
  exit 1
}
pkg="$work/pkg"
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$pkg"; done
root="$work/rootfs"
mkdir -p "$root"/{bin,etc/nginx,usr/sbin,usr/share/nginx/html,var/log/nginx,var/lib/nginx,run,tmp}
chmod 1777 "$root/tmp"
cp "$pkg/usr/sbin/nginx" "$root/usr/sbin/nginx"
cp "$pkg/etc/nginx/mime.types" "$root/etc/nginx/mime.types"
# The shared libraries nginx links, from this machine (the same Debian release as the package).
ldd "$root/usr/sbin/nginx" | awk '/=> \// {print $3} /^\t\/[^ ]*ld-linux/ {print $1}' | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
cp /bin/busybox "$root/bin/busybox"
for a in sh cat echo ls mkdir rm sleep hostname wget nc; do ln -s busybox "$root/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$root/etc/passwd"
printf 'root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n' >"$root/etc/group"
cat >"$root/etc/nginx/nginx.conf" <<'CONF'
user www-data;
worker_processes 1;
pid /run/nginx.pid;
error_log /dev/stderr notice;
events { worker_connections 512; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /dev/stdout;
    sendfile on;
    server {
        listen 80 default_server;
        root /usr/share/nginx/html;
        index index.html;
    }
}
CONF
cat >"$root/usr/share/nginx/html/index.html" <<'HTML'
<!doctype html>
<title>Welcome to nginx!</title>
<h1>Welcome to nginx!</h1>
<p>Debian's nginx, in an image built by Skiff's scripts/nginx-image.sh.</p>
HTML
# shellcheck source=scripts/oci-archive.sh
. "$(dirname "$0")/oci-archive.sh"
oci_archive "$out" "$root" /usr/sbin:/bin \
  'docker.io/library/nginx:latest|["nginx","-g","daemon off;"]|80'
echo "wrote $out (docker.io/library/nginx:latest, $("$root/usr/sbin/nginx" -v 2>&1 | sed 's/.*: //'))"
