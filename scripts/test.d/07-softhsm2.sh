#!/usr/bin/env bash
# The PKCS#11 key provider's tests (tests/keys/) run against Debian's SoftHSM2, a software
# token: install it when missing. The tests make their own tokens in temporary folders.
set -euo pipefail
if [ -e /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null 2>&1; then
  exit 0
fi
echo "== installing SoftHSM2"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq softhsm2 >/dev/null
