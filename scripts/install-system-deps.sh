#!/usr/bin/env bash
# Installs the Debian packages the integration tests and the demo start (idempotent).
# As root it installs what is missing; otherwise it prints the command to run.
set -euo pipefail
pkgs=(docker.io docker-registry gitolite3 openssh-server openssh-client busybox-static curl git systemd skopeo)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}" >&2
  echo "run: sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
