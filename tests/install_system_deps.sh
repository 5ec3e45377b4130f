#!/usr/bin/env bash
# System packages some tests need, from Debian:
#   chromium    the headless-browser check of the HTML invoice (tests/test_invoice.py)
#   postgresql  a real server for the Iceberg store's SQL catalog (tests/postgres_server.py starts a
#               throwaway one; Debian puts initdb and postgres in /usr/lib/postgresql/NN/bin)
# Safe to run again and again: it installs only what is missing and does nothing when all is there.
# Never fails: without root or without apt it prints one line and exits 0, so the other tests still run
# (outside CI those tests then skip with their reason; in CI, where CI=true, they fail instead).
set -u

have_postgres() {
    if command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1; then
        return 0
    fi
    local bin
    for bin in /usr/lib/postgresql/*/bin; do
        if [ -x "$bin/initdb" ] && [ -x "$bin/postgres" ]; then
            return 0
        fi
    done
    return 1
}

missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
have_postgres || missing+=(postgresql)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_system_deps: not root, ${missing[*]} not installed (as root: apt-get install -y ${missing[*]})"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_system_deps: no apt-get here, ${missing[*]} not installed; install with the system's package manager"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp -t install_system_deps.XXXXXX.log)
if ! apt-get update -qq >"$log" 2>&1; then
    echo "install_system_deps: apt-get update failed (see $log); ${missing[*]} not installed, their tests will not run"
    exit 0
fi
failed=0
for package in "${missing[@]}"; do  # one at a time: a failure of one still installs the other
    apt-get install -y -qq --no-install-recommends "$package" >>"$log" 2>&1
    if { [ "$package" = chromium ] && [ -x /usr/bin/chromium ]; } || { [ "$package" = postgresql ] && have_postgres; }; then
        echo "install_system_deps: installed $package"
    else
        echo "install_system_deps: apt-get could not install $package (see $log); its tests will not run"
        failed=1
    fi
done
[ "$failed" -eq 1 ] || rm -f "$log"
exit 0
