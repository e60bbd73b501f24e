#!/usr/bin/env bash
# Builds the Postgres 17 + pgvector + pg_cron + pg_net root used by the push-path
# test tier (tests/test_push_path.py). Idempotent: a finished root is reused.
#   usage: build.sh ROOT PG_NET_TARBALL
# Needs root, debootstrap (installed from apt when missing) and the Debian mirror
# this machine's apt sources name. pg_net is compiled from the tarball given.
set -euo pipefail
ROOT="$1"
TARBALL="$2"
STAMP="$ROOT/.autoembed-ready"
[ -f "$STAMP" ] && exit 0
[ -f "$TARBALL" ] || { echo "pg_net source not found at $TARBALL" >&2; exit 3; }
[ "$(id -u)" = 0 ] || { echo "building the pg_cron root needs root" >&2; exit 3; }

if ! command -v debootstrap >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
MIRROR=$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null || true) \
  | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+/debian/?$|https?://[^ ]+/debian/? ' | grep -v security | head -n1 | tr -d ' ' || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}

rm -rf "$ROOT.tmp"
mkdir -p "$(dirname "$ROOT")"
debootstrap --variant=minbase \
  --include=postgresql-17,postgresql-17-pgvector,postgresql-17-cron,postgresql-server-dev-17,libcurl4-openssl-dev,libicu-dev,pkg-config,gcc,make,libc6-dev \
  trixie "$ROOT.tmp" "$MIRROR" >"$ROOT.log" 2>&1 || { tail -n 30 "$ROOT.log" >&2; exit 4; }

cp "$TARBALL" "$ROOT.tmp/tmp/pg_net.tar.gz"
mount -t proc proc "$ROOT.tmp/proc"
trap 'umount "$ROOT.tmp/proc" 2>/dev/null || true' EXIT
chroot "$ROOT.tmp" sh -c 'cd /tmp && mkdir -p pg_net && tar xzf pg_net.tar.gz -C pg_net --strip-components=1 \
  && cd pg_net && make -s PG_CONFIG=/usr/lib/postgresql/17/bin/pg_config \
  && make -s PG_CONFIG=/usr/lib/postgresql/17/bin/pg_config install' >>"$ROOT.log" 2>&1 \
  || { tail -n 30 "$ROOT.log" >&2; exit 4; }
umount "$ROOT.tmp/proc"
trap - EXIT
mv "$ROOT.tmp" "$ROOT"
touch "$STAMP"
