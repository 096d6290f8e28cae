#!/usr/bin/env bash
# The operator's image: one final stage (image/Containerfile) for `make image` and the
# release workflow.
#
#   image/build.sh context DIR ARCH=BINARY...
#       Stages the final stage's build context in DIR: bin/ARCH/cyberdesk-operator for each
#       ARCH (amd64, arm64), and etc/: passwd and group with the one user 65532, and the CA
#       bundle of this machine (CA_BUNDLE, default /etc/ssl/certs/ca-certificates.crt). The
#       release workflow calls this with the binaries image/binaries.Dockerfile built.
#   image/build.sh local
#       What `make image` runs: the static musl binary for this machine (`cargo auditable
#       build --release`), its context, and `podman build` of the final stage (nothing is
#       pulled), tagged IMAGE (default cyberdesk-operator:<Cargo.toml version>); prints the
#       image's size. PODMAN is the podman command (default: runc, cgroupfs).
set -euo pipefail
cd "$(dirname "$0")/.."
# The staged files keep their modes in the image: readable by 65532 whatever the caller's umask.
umask 022

CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
# The cargo-auditable this script installs when it is missing (image/binaries.Dockerfile pins the same).
CARGO_AUDITABLE_VERSION=0.7.7

die() {
  echo "image/build.sh: $*" >&2
  exit 1
}

stage_context() {
  local dir="$1" pair arch bin
  shift
  [[ $# -gt 0 ]] || die "usage: image/build.sh context DIR ARCH=BINARY..."
  [[ -s "$CA_BUNDLE" ]] || die "no CA bundle at $CA_BUNDLE (Debian and Ubuntu: apt-get install ca-certificates)"
  rm -rf "$dir"
  mkdir -p "$dir/etc/ssl/certs"
  # The user the Deployment runs as (runAsUser and runAsGroup 65532): no shell, no home.
  printf 'nonroot:x:65532:65532:cyberdesk-operator:/nonexistent:/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'nonroot:x:65532:\n' >"$dir/etc/group"
  cp "$CA_BUNDLE" "$dir/etc/ssl/certs/ca-certificates.crt"
  chmod 0644 "$dir/etc/passwd" "$dir/etc/group" "$dir/etc/ssl/certs/ca-certificates.crt"
  for pair in "$@"; do
    arch="${pair%%=*}"
    bin="${pair#*=}"
    [[ "$arch" == amd64 || "$arch" == arm64 ]] || die "unknown architecture '$arch' in '$pair' (amd64, arm64)"
    [[ -f "$bin" ]] || die "no binary at $bin (for $arch)"
    mkdir -p "$dir/bin/$arch"
    install -m 0755 "$bin" "$dir/bin/$arch/cyberdesk-operator"
  done
}

local_image() {
  local cargo="${CARGO:-cargo}" arch target target_dir image old new size
  local -a podman
  read -r -a podman <<<"${PODMAN:-podman --runtime runc --cgroup-manager=cgroupfs}"
  image="${IMAGE:-cyberdesk-operator:$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)}"
  case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) die "no image for $(uname -m) (amd64 and arm64 only)" ;;
  esac
  target="$(uname -m)-unknown-linux-musl"
  command -v "${podman[0]}" >/dev/null || die "${podman[0]} is missing: \`make tools\` installs podman and runc as root (apt-get install podman runc)"
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
  command -v cargo-auditable >/dev/null || "$cargo" install "cargo-auditable@$CARGO_AUDITABLE_VERSION" --locked
  "$cargo" auditable build --release --locked --target "$target" -p cyberdesk-operator
  target_dir="$("$cargo" metadata --format-version 1 --no-deps | sed -E 's/.*"target_directory":"([^"]*)".*/\1/')"

  CONTEXT="$(mktemp -d)"
  trap 'rm -rf "$CONTEXT"' EXIT
  stage_context "$CONTEXT" "$arch=$target_dir/$target/release/cyberdesk-operator"
  old="$("${podman[@]}" image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)"
  "${podman[@]}" build --quiet --layers=false --build-arg "TARGETARCH=$arch" -f image/Containerfile -t "$image" "$CONTEXT" >/dev/null
  new="$("${podman[@]}" image inspect --format '{{.Id}}' "$image")"
  # The previous build of this tag, now untagged, would otherwise pile up.
  if [[ -n "$old" && "$old" != "$new" ]]; then
    "${podman[@]}" rmi "$old" >/dev/null 2>&1 || true
  fi
  size="$("${podman[@]}" image inspect --format '{{.Size}}' "$image")"
  echo "$image: $size bytes ($((size / 1024 / 1024)) MiB), image id ${new:0:12}"
}

case "${1:-}" in
  context)
    shift
    [[ $# -ge 1 ]] || die "usage: image/build.sh context DIR ARCH=BINARY..."
    stage_context "$@"
    ;;
  local) local_image ;;
  *) die "usage: image/build.sh context DIR ARCH=BINARY... | image/build.sh local" ;;
esac
