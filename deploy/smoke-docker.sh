#!/usr/bin/env bash
# Opt-in deployment smoke test (not part of tests/run-all.sh: it takes a few
# minutes). Installs Docker from Debian, starts a private dockerd, makes a
# debian:bookworm base image with debootstrap (no registry is reachable),
# builds deploy/docker-compose.yml (server + Prometheus), checks that the
# server answers over gRPC and that Prometheus scrapes it, then tears
# everything down again (containers, images' daemon, bridge, iptables).
set -euo pipefail
cd "$(dirname "$0")/.."
work=${HXEMU_DOCKER_WORK:-/tmp/hxemu-docker}
export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in docker.io docker-compose debootstrap curl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; fi

mkdir -p "$work"
ip_forward_before=$(cat /proc/sys/net/ipv4/ip_forward)
export DOCKER_HOST="unix://$work/docker.sock"
setsid dockerd --storage-driver=overlay2 --data-root="$work/root" \
  --exec-root="$work/exec" --pidfile="$work/dockerd.pid" -H "$DOCKER_HOST" \
  > "$work/dockerd.log" 2>&1 &
dockerd_pid=$!
cleanup() {
  docker-compose -p hxemu-smoke -f deploy/docker-compose.yml down >/dev/null 2>&1 || true
  kill "$dockerd_pid" 2>/dev/null || true
  wait "$dockerd_pid" 2>/dev/null || true
  ip link del docker0 2>/dev/null || true
  for table in filter nat; do
    for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N DOCKER/ {print $2}'); do
      iptables -t "$table" -F "$chain" 2>/dev/null || true
    done
  done
  umount "$work/exec/netns/default" 2>/dev/null || true
  echo "$ip_forward_before" > /proc/sys/net/ipv4/ip_forward  # dockerd sets it to 1
}
trap cleanup EXIT
for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done

if ! docker image inspect debian:bookworm >/dev/null 2>&1; then
  mirror=$(sed -n 's/^URIs: //p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase bookworm "$work/rootfs" "${mirror:-http://deb.debian.org/debian}" > "$work/debootstrap.log"
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  tar -C "$work/rootfs" -c . | docker import - debian:bookworm
fi

docker-compose -p hxemu-smoke -f deploy/docker-compose.yml build
docker-compose -p hxemu-smoke -f deploy/docker-compose.yml up -d

PYTHONPATH="$PWD/client/python" /usr/bin/python3 - <<'PY'
import time
from hxemu.client import Client
deadline = time.time() + 60
while True:
    try:
        info = Client("127.0.0.1:50051").server_info()
        break
    except Exception:
        if time.time() > deadline:
            raise
        time.sleep(1)
print(f"smoke: server {info.version} with {info.num_chips} chip(s) answers over gRPC")
PY
for _ in $(seq 60); do
  if curl -s 127.0.0.1:9090/api/v1/targets | grep -q '"health":"up"'; then
    echo "smoke: Prometheus scrapes hxemu-server (target up)"
    exit 0
  fi
  sleep 1
done
echo "smoke: Prometheus target never came up" >&2
exit 1
