#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (/usr/bin/chromium), and one of them
# runs it with a window on Xvfb (a hidden tab cannot be had headless). `make test`
# runs this first: it installs what is missing when this user may (root, or
# password-less sudo); otherwise it says how, and those tests skip.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v Xvfb >/dev/null 2>&1 || missing+=(xvfb)
exec bash "$(dirname "$0")/apt_install.sh" "browser tests" "${missing[@]}"
