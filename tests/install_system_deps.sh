#!/usr/bin/env bash
# System packages some tests need: Debian's chromium, for the headless-browser check of the HTML
# invoice (tests/test_invoice.py). Safe to run again and again: it does nothing when chromium is there.
# Never fails: without root or without apt it prints one line and exits 0, so the other tests still run
# (outside CI the browser test then skips with its reason; in CI, where CI=true, it fails instead).
set -u

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_system_deps: not root, chromium not installed (as root: apt-get install -y chromium)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_system_deps: no apt-get here, chromium not installed; install it with the system's package manager"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp -t install_system_deps.XXXXXX.log)
if apt-get update -qq >"$log" 2>&1 \
        && apt-get install -y -qq --no-install-recommends chromium >>"$log" 2>&1 \
        && [ -x /usr/bin/chromium ]; then
    echo "install_system_deps: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
    rm -f "$log"
else
    echo "install_system_deps: apt-get could not install chromium (see $log); the browser test will not run"
fi
exit 0
