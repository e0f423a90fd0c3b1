# Sourced by the image scripts: writes an OCI image archive (an OCI layout in a tar) of one
# root filesystem as one layer, with one or more images (name, command, port) over it.
#
#   oci_archive OUT ROOTFS PATH-ENV 'NAME|CMD-JSON|PORT' ...
#
# The layer is a reproducible gzip tarball (sorted, root-owned, fixed mtime).
oci_archive() {
  local out="$1" root="$2" path_env="$3"
  shift 3
  local work
  work="$(mktemp -d)"
  local blobs="$work/layout/blobs/sha256"
  mkdir -p "$blobs"
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2026-01-01 00:00Z' -C "$root" -cf "$work/layer.tar" .
  local diff_id layer layer_size arch
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
  local entries="" spec name cmd port config manifest
  for spec in "$@"; do
    IFS='|' read -r name cmd port <<<"$spec"
    printf '{"architecture":"%s","os":"linux","config":{"Env":["PATH=%s"],"Cmd":%s,"ExposedPorts":{"%s/tcp":{}}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
      "$arch" "$path_env" "$cmd" "$port" "$diff_id" >"$work/config.json"
    config="$(sha256sum "$work/config.json" | cut -d' ' -f1)"
    cp "$work/config.json" "$blobs/$config"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
      "$config" "$(stat -c %s "$work/config.json")" "$layer" "$layer_size" >"$work/manifest.json"
    manifest="$(sha256sum "$work/manifest.json" | cut -d' ' -f1)"
    cp "$work/manifest.json" "$blobs/$manifest"
    entries="${entries:+$entries,}$(printf '{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}' \
      "$manifest" "$(stat -c %s "$work/manifest.json")" "$name")"
  done
  printf '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"
  printf '{"schemaVersion":2,"manifests":[%s]}' "$entries" >"$work/layout/index.json"
  tar -C "$work/layout" -cf "$out" oci-layout index.json blobs
  rm -rf "$work"
}
