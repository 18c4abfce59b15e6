#!/usr/bin/env bash
# System packages some tests need, from Debian: each group is optional, and the tests that need a
# missing one are skipped with a message saying so. Idempotent, and never fails its caller.
#   chromium     the browser tests (tests/test_web*.py); Playwright's own download is not reachable
#   postgresql   the PostgreSQL transcript store (tests/test_store.py starts its own server)
#   apertium     the rule-based translation backend (tests/test_translation_backends.py)
# Add a group as one line in PACKAGES below.
set -u
declare -A PACKAGES=(
  [chromium]="chromium fonts-dejavu-core"
  [postgresql]="postgresql"
  [apertium]="apertium apertium-eng-spa"
)

if [ "$(id -u)" = 0 ]; then
  apt=(apt-get)
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  apt=(sudo apt-get)
else
  echo "install-test-deps: not root and no sudo: install ${PACKAGES[*]} yourself" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: no apt-get: install ${PACKAGES[*]} yourself" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
missing=()
for group in "${!PACKAGES[@]}"; do
  for package in ${PACKAGES[$group]}; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
  done
done
[ ${#missing[@]} -eq 0 ] && exit 0
"${apt[@]}" update -qq || true
for package in "${missing[@]}"; do  # one at a time: a package missing from a mirror skips only its tests
  "${apt[@]}" install -y -qq --no-install-recommends "$package" >/dev/null \
    || echo "install-test-deps: could not install $package; the tests that need it will be skipped" >&2
done
exit 0
