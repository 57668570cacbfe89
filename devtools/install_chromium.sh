#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (/usr/bin/chromium). `make test`
# runs this first: it installs the package when it is missing and this user may
# (root, or password-less sudo); otherwise it says how, and those tests skip.
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[chromium] not installed and no apt-get here: the browser tests will be skipped" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "[chromium] not installed; run 'sudo apt-get install chromium' to run the browser tests" >&2
    exit 0
  fi
fi
echo "[chromium] installing Debian's chromium for the browser tests (once)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
