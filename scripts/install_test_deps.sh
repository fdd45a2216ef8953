#!/usr/bin/env bash
# Install what the tests need beyond Python packages, on a fresh machine: Debian's chromium
# (the web console's browser tests) and playwright-core from npm (the driver; pinned by
# tests/web/package-lock.json, no browser download); zsh and fish (completion scripts are
# parsed by them); espeak-ng (speech for the local voice round trip). Idempotent and quick when done.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

missing=()
for pkg in chromium zsh fish espeak-ng; do
    command -v "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "missing: ${missing[*]}: run 'sudo apt-get install -y ${missing[*]}'" >&2
        exit 1
    fi
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    }
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "npm missing: install Node.js 20+ and npm (apt-get install -y nodejs npm)" >&2
    exit 1
fi
lock="$ROOT/tests/web/package-lock.json"
stamp="$ROOT/tests/web/node_modules/.installed"
if [ ! -f "$stamp" ] || [ "$lock" -nt "$stamp" ]; then
    (cd "$ROOT/tests/web" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$stamp"
fi
