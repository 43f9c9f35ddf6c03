#!/usr/bin/env bash
# Build a minimal Python image for sandboxed runs without any registry: the root filesystem is
# made from Debian packages (python3.11, git, busybox) and imported with `docker import`.
#
#   tools/docker/make-base-image.sh IMAGE [CACHE_DIR]
#
# Needs apt-get (Debian 12), dpkg-deb and a docker engine reachable through DOCKER_HOST (the
# import goes through the engine's API with curl or the docker CLI, whichever is present).
# The root filesystem tarball is cached in CACHE_DIR (default: $TMPDIR/cub-base-image), keyed
# by the exact package versions, so a second build is a plain import.
set -euo pipefail

image="${1:?usage: make-base-image.sh IMAGE [CACHE_DIR]}"
cache="${2:-${TMPDIR:-/tmp}/cub-base-image}"

packages=(
  python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
  libc6 libgcc-s1 libstdc++6 libexpat1 zlib1g libssl3 libffi8 libbz2-1.0 liblzma5 libcrypt1
  libsqlite3-0 libuuid1 libzstd1 libtinfo6 libncursesw6 libreadline8 media-types
  busybox-static
  # git for the agent's commits (the core git binary needs only pcre2 and zlib besides libc)
  git libpcre2-8-0
)

mkdir -p "$cache"
uris() { apt-get download --print-uris "${packages[@]}" 2>/dev/null; }
if ! listing="$(uris)" || [ -z "$listing" ]; then
  apt-get update -qq >/dev/null
  listing="$(uris)"
fi
key="$(printf '%s\n' "$listing" | awk '{print $2}' | sort | sha256sum | cut -c1-16)"
tarball="$cache/rootfs-$key.tar"

if [ ! -s "$tarball" ]; then
  work="$(mktemp -d "$cache/build.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  chmod 755 "$work"  # apt-get download fetches as the _apt user when it can
  (cd "$work" && apt-get download -qq "${packages[@]}" >/dev/null)
  root="$work/root"
  mkdir -p "$root"
  for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$root"
  done
  # Debian 12 is merged-/usr: the packages ship /lib etc. as symlinks only on a real system.
  for dir in bin sbin lib lib64; do
    if [ -d "$root/$dir" ] && [ ! -L "$root/$dir" ]; then
      mkdir -p "$root/usr/$dir"
      cp -a "$root/$dir/." "$root/usr/$dir/"
      rm -rf "${root:?}/$dir"
    fi
    [ -e "$root/$dir" ] || ln -s "usr/$dir" "$root/$dir"
  done
  ln -sf python3.11 "$root/usr/bin/python3"
  ln -sf python3 "$root/usr/bin/python"
  for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/usr/bin/$applet" ] || ln -s busybox "$root/usr/bin/$applet"
  done
  mkdir -p "$root/etc" "$root/tmp" "$root/root" "$root/home" "$root/proc" "$root/sys" "$root/dev"
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' \
    >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/locale" "$root/usr/share/info"
  tar -C "$root" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi

# Import: POST /images/create?fromSrc=- with the tarball as the body (the same as `docker import`).
sock="${DOCKER_HOST#unix://}"
change="$(printf 'ENV PATH=/usr/local/bin:/usr/bin:/bin' | od -An -tx1 | tr -d ' \n' | sed 's/../%&/g')"
repo="${image%:*}"; tag="${image##*:}"
[ "$repo" = "$image" ] && tag=latest
if [ "${DOCKER_HOST:-}" != "${sock}" ] && command -v curl >/dev/null; then
  curl -fsS --unix-socket "$sock" -X POST -H 'Content-Type: application/x-tar' \
    --data-binary "@$tarball" \
    "http://localhost/images/create?fromSrc=-&repo=$repo&tag=$tag&changes=$change" >/dev/null
else
  docker import --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' "$tarball" "$image" >/dev/null
fi
echo "$image"
