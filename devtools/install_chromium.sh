#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (/usr/bin/chromium), and one of them
# runs it with a window on Xvfb (a hidden tab cannot be had headless). `make test`
# runs this first: it installs what is missing when this user may (root, or
# password-less sudo); otherwise it says how, and those tests skip.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v Xvfb >/dev/null 2>&1 || missing+=(xvfb)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[browser tests] ${missing[*]} not installed and no apt-get here: those tests will be skipped" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "[browser tests] run 'sudo apt-get install ${missing[*]}' to run the browser tests" >&2
    exit 0
  fi
fi
echo "[browser tests] installing Debian's ${missing[*]} (once)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
