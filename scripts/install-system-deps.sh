#!/usr/bin/env bash
# Installs the Debian packages the integration tests and the demo start (idempotent: quick when all are there).
#   scripts/install-system-deps.sh           as root: install what is missing; otherwise print the one line to run
#   scripts/install-system-deps.sh --check   print what is missing (space-separated) and exit 1, install nothing
# `make test` and .ci/run call it; tests/conftest.py uses --check to skip the integration tests with a reason.
set -euo pipefail
pkgs=(docker.io docker-registry gitolite3 openssh-server openssh-client busybox-static curl git systemd skopeo)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "${1:-}" = "--check" ]; then
  echo "${missing[*]}"
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages (${missing[*]}): run 'sudo bash scripts/install-system-deps.sh'; the integration tests are skipped until then" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
