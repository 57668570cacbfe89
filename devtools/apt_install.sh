#!/usr/bin/env bash
# Install Debian packages that some tests need, when this user may (root, or
# password-less sudo); otherwise say how, and exit 0 so that only those tests
# skip. Shared by install_chromium.sh and install_deploy_tools.sh.
#
# Usage: apt_install.sh LABEL [--no-install-recommends] PACKAGE...
set -euo pipefail
label=$1
shift
options=()
if [ "${1:-}" = --no-install-recommends ]; then
  options+=(--no-install-recommends)
  shift
fi
[ $# -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[$label] $* not installed and no apt-get here: their tests will be skipped" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "[$label] run 'sudo apt-get install ${options[*]:+${options[*]} }$*' to run their tests" >&2
    exit 0
  fi
fi
echo "[$label] installing Debian's $* for their tests (once, about a minute)" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${options[@]}" "$@" >/dev/null
