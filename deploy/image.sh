#!/usr/bin/env bash
# Builds the runtime image of deploy/Dockerfile with no registry and tags it
# converge-ledger:latest (or $LEDGER_IMAGE).
#
#   deploy/image.sh [BINARY]     # default: the release build, $CARGO_TARGET_DIR/release/converge-ledger
#
# The engine needs no base image: the root filesystem is the release binary, exactly the shared
# libraries it links (from `ldd`, taken from this Debian 12 machine, the runtime stage's base),
# /etc/passwd and /etc/group with the `ledger` user (uid 10001) and /data owned by it. It is
# built `FROM scratch` with the runtime settings (user, workdir, volume, ports, health check,
# entrypoint) copied verbatim from deploy/Dockerfile, so the two images behave alike; a test
# compares them. An image already built from the same inputs is kept (prints "up to date").
# Needs: docker (any engine, no registry), GNU tar, ldd, strip (binutils).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

bin="${1:-$CARGO_TARGET_DIR/release/converge-ledger}"
tag="${LEDGER_IMAGE:-converge-ledger:latest}"
dockerfile=deploy/Dockerfile
uid=10001

die() {
  echo "image.sh: $*" >&2
  exit 1
}
[ -x "$bin" ] || die "no binary at $bin (build it: cargo build --release -p ledger-node)"
command -v docker >/dev/null || die "docker is not installed"
command -v strip >/dev/null || die "strip is not installed (Debian: binutils)"

# The runtime settings of the Dockerfile, verbatim.
settings=$(sed -n '/^# runtime settings: begin$/,/^# runtime settings: end$/p' "$dockerfile")
[ -n "$settings" ] || die "$dockerfile has no '# runtime settings: begin/end' block"
grep -q "^USER $uid:$uid\$" <<<"$settings" || die "$dockerfile's runtime user is not $uid:$uid"

# Every library the binary loads, and the dynamic loader.
libs=$(ldd "$bin" | grep -o '/[^ ]*' | sort -u)
[ -n "$libs" ] || die "ldd found no libraries in $bin"

# Same inputs, same image: skip the build when the tag already has them.
inputs=$( (sha256sum "$bin" deploy/image.sh | cut -d' ' -f1; echo "$libs"; echo "$settings") | sha256sum | cut -d' ' -f1)
current=$(docker image inspect -f '{{ index .Config.Labels "converge-ledger.inputs" }}' "$tag" 2>/dev/null || true)
if [ "$current" = "$inputs" ]; then
  echo "image.sh: $tag is up to date ($inputs)"
  exit 0
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root"/{etc,tmp,usr/bin,usr/sbin,usr/lib,usr/lib64,usr/local/bin}
chmod 1777 "$root/tmp"
# Debian 12's merged /usr layout.
for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done

install -m 0755 "$bin" "$root/usr/local/bin/converge-ledger"
# As the Dockerfile: symbols kept (names in backtraces), DWARF line tables (~95% of the size) not.
strip --strip-debug "$root/usr/local/bin/converge-ledger"
# The libraries at their canonical paths.
for lib in $libs; do
  dir=$(readlink -f "$(dirname "$lib")")
  mkdir -p "$root$dir"
  cp -L "$lib" "$root$dir/$(basename "$lib")"
done

cat >"$root/etc/passwd" <<EOF
root:x:0:0:root:/root:/usr/sbin/nologin
ledger:x:$uid:$uid::/data:/usr/sbin/nologin
EOF
cat >"$root/etc/group" <<EOF
root:x:0:
ledger:x:$uid:
EOF
# Names: /etc/hosts first, then DNS (the container runtime provides both files).
echo 'hosts: files dns' >"$root/etc/nsswitch.conf"

# Owners are set in the archives, so this works without root.
tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$ctx/rootfs.tar" .
mkdir -p "$ctx/data/data"
chmod 0750 "$ctx/data/data"
tar --numeric-owner --owner=$uid --group=$uid -C "$ctx/data" -cf "$ctx/data.tar" data
rm -rf "$root" "$ctx/data"

cat >"$ctx/Dockerfile" <<EOF
FROM scratch
ADD rootfs.tar /
ADD data.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL converge-ledger.inputs="$inputs" \\
      org.opencontainers.image.title="converge-ledger" \\
      org.opencontainers.image.source="deploy/image.sh"
$settings
EOF
# The classic builder: it needs no BuildKit component and no registry for FROM scratch.
DOCKER_BUILDKIT=0 docker build --quiet -t "$tag" "$ctx" >/dev/null 2>"$ctx/build.log" || {
  cat "$ctx/build.log" >&2
  die "docker build failed"
}
# The previous build of the tag, now untagged, is ours to remove.
docker image prune -f --filter "label=org.opencontainers.image.source=deploy/image.sh" >/dev/null
echo "image.sh: built $tag from $bin ($inputs)"
