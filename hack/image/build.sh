#!/usr/bin/env bash
# Builds the release image from the Containerfile exactly as a user would (`buildah bud`), with
# locally made stand-ins for the two public base images it names, because no registry is reachable
# here. Prints the image's size. Usage: hack/image/build.sh [tag]  (default scoped-secrets:<version>)
#
#   docker.io/library/rust:1-bookworm      <- mmdebstrap minbase + gcc, libc6-dev, pkg-config, make,
#                                             ca-certificates and the host's Rust toolchain
#   gcr.io/distroless/cc-debian12:nonroot  <- mmdebstrap extract: base-files, netbase, tzdata, libc6,
#                                             libgcc-s1, ca-certificates (no shell, no package manager)
#
# The bases are made once and kept in containers-storage (they are rebuilt only when missing, or when
# the host's rustc changes). Needs root; installs its tools with apt on a fresh machine.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
version=$(awk -F'"' '/^version *=/ { print $2; exit }' Cargo.toml)
tag=${1:-scoped-secrets:$version}
builder_base=docker.io/library/rust:1-bookworm
runtime_base=gcr.io/distroless/cc-debian12:nonroot
# vfs and chroot isolation work in any container or VM (no overlay or user namespaces needed).
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
bud=(buildah --storage-driver=vfs)

need_tools() {
  local missing=()
  for t in buildah mmdebstrap; do command -v "$t" >/dev/null || missing+=("$t"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing ${missing[*]} with apt" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends buildah mmdebstrap runc >/dev/null
}

has_image() { "${bud[@]}" inspect --type image "$1" >/dev/null 2>&1; }

# vfs keeps every layer as a full copy of the root filesystem, so each build leaves about 5 GB of
# untagged images behind (the builder stage's layers, the image it replaced); a few builds fill a
# disk. Removes every untagged image and every working container (left by a build that was
# interrupted) from the vfs store; the tagged bases and images stay. The whole store: on a machine
# where someone else's vfs builds keep untagged images or working containers, those go too.
prune_untagged() {
  local before after
  before=$(du -sm /var/lib/containers/storage/vfs 2>/dev/null | cut -f1) || before=0
  "${bud[@]}" rm --all >/dev/null 2>&1 || true
  "${bud[@]}" rmi --prune >/dev/null 2>&1 || true
  after=$(du -sm /var/lib/containers/storage/vfs 2>/dev/null | cut -f1) || after=0
  echo "untagged images removed: ${before:-0} MB -> ${after:-0} MB in containers-storage" >&2
}

# Commits a root filesystem tarball as an image with the given name and config.
import_rootfs() { # tarball, name, buildah config args...
  local tarball=$1 name=$2; shift 2
  local ctr
  ctr=$("${bud[@]}" from scratch)
  "${bud[@]}" add "$ctr" "$tarball" / >/dev/null
  "${bud[@]}" config "$@" "$ctr"
  "${bud[@]}" commit --rm -q "$ctr" "$name" >/dev/null
}

make_runtime_base() {
  has_image "$runtime_base" && return 0
  echo "making $runtime_base with mmdebstrap" >&2
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  # "extract" unpacks the packages without running their scripts: no shell, no dpkg database use.
  # distroless' users: root and nonroot (65532), so `USER 65532` has a name.
  mmdebstrap --quiet --variant=extract --include=base-files,netbase,tzdata,libc6,libgcc-s1,ca-certificates \
    --customize-hook='printf "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n" > "$1/etc/passwd"' \
    --customize-hook='printf "root:x:0:\nnonroot:x:65532:\n" > "$1/etc/group"' \
    --customize-hook='mkdir -p "$1/home/nonroot" && chown 65532:65532 "$1/home/nonroot"' \
    --customize-hook='rm -rf "$1/usr/share/doc" "$1/usr/share/man" "$1/usr/share/info" "$1/usr/share/lintian" "$1/var/cache/apt" "$1/var/lib/apt/lists"' \
    bookworm "$tmp/rootfs.tar"
  import_rootfs "$tmp/rootfs.tar" "$runtime_base" --user 65532:65532 --workingdir /home/nonroot \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
}

make_builder_base() {
  local rustc_version toolchain
  rustc_version=$(rustc --version)
  toolchain=$(rustc --print sysroot)
  if has_image "$builder_base" \
    && [ "$("${bud[@]}" inspect --type image --format '{{index .OCIv1.Config.Labels "rustc"}}' "$builder_base" 2>/dev/null)" = "$rustc_version" ]; then
    return 0
  fi
  echo "making $builder_base with mmdebstrap and the host's toolchain ($rustc_version)" >&2
  local tmp; tmp=$(mktemp -d); trap 'rm -rf "$tmp"' RETURN
  mmdebstrap --quiet --variant=minbase --include=gcc,libc6-dev,pkg-config,make,ca-certificates bookworm "$tmp/rootfs.tar"
  # The toolchain as rust:1-bookworm lays it out (/usr/local/cargo/bin on PATH), without its docs.
  mkdir -p "$tmp/rust/usr/local/rust" "$tmp/rust/usr/local/cargo/bin"
  cp -a "$toolchain/bin" "$toolchain/lib" "$tmp/rust/usr/local/rust/"
  for b in cargo rustc rustdoc; do ln -s "../../rust/bin/$b" "$tmp/rust/usr/local/cargo/bin/$b"; done
  tar -C "$tmp/rust" -cf "$tmp/rust.tar" usr
  local ctr
  ctr=$("${bud[@]}" from scratch)
  "${bud[@]}" add "$ctr" "$tmp/rootfs.tar" / >/dev/null
  "${bud[@]}" add "$ctr" "$tmp/rust.tar" / >/dev/null
  "${bud[@]}" config --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --label "rustc=$rustc_version" --cmd /bin/bash "$ctr"
  "${bud[@]}" commit --rm -q "$ctr" "$builder_base" >/dev/null
}

[ "$(id -u)" = 0 ] || { echo "SKIPPED: building the image needs root (mmdebstrap and buildah make the bases and run the build)"; exit 0; }
need_tools
start=$(date +%s)
prune_untagged
make_runtime_base
make_builder_base
echo "bases ready after $(( $(date +%s) - start ))s" >&2

# The host's CA bundle: crates.io is reached through this machine's TLS egress, whose CA only the
# host trusts. Mounted for the RUN steps only; the image keeps Debian's bundle.
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
"${bud[@]}" bud --pull=never --layers \
  --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
  --build-arg "SCOPED_SECRETS_COMMIT=$commit" \
  -f Containerfile -t "$tag" .
prune_untagged
echo "image $tag built in $(( $(date +%s) - start ))s; size: $("${bud[@]}" images --format '{{.Size}}' "$tag" | head -n1)"
