#!/usr/bin/env bash
# Chromium for the browser tests (tests/test_web*.py): Debian's package, because Playwright's own
# browser download is not reachable everywhere. Idempotent, and never fails its caller: without
# Chromium the browser tests are skipped with a message saying so.
set -u
for name in chromium chromium-browser google-chrome; do
  if command -v "$name" >/dev/null 2>&1; then exit 0; fi
done
if [ -n "${WLK_CHROMIUM:-}" ] && [ -x "$WLK_CHROMIUM" ]; then exit 0; fi

if [ "$(id -u)" = 0 ]; then
  apt=(apt-get)
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  apt=(sudo apt-get)
else
  echo "install-browser-deps: not root and no sudo: install chromium yourself to run the browser tests" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser-deps: no apt-get: install chromium yourself to run the browser tests" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if "${apt[@]}" update -qq && "${apt[@]}" install -y -qq chromium fonts-dejavu-core >/dev/null; then
  echo "install-browser-deps: $(chromium --version 2>/dev/null | head -n 1)"
else
  echo "install-browser-deps: could not install chromium; the browser tests will be skipped" >&2
fi
exit 0
