#!/usr/bin/env bash
# Debian packages the test suite uses: chromium and chromium-driver for the report's browser test.
# Idempotent; without root (or apt) it says what is missing and the browser test skips, naming why.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "install_system_packages: chromium/chromium-driver missing and this is not a root Debian shell;" \
       "the browser test will skip (apt-get install chromium chromium-driver)" >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
