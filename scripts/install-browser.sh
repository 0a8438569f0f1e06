#!/usr/bin/env bash
# Debian's Chromium for the browser test (tests/integration/test_ui_browser.py), driven by Python playwright
# with executable_path=/usr/bin/chromium. Playwright's own browser download (`playwright install`) is never
# used. Idempotent: does nothing when /usr/bin/chromium is already there.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "install-browser: installing Debian's chromium (apt-get)" >&2
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium
/usr/bin/chromium --version >&2
