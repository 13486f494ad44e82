#!/usr/bin/env bash
# Builds the vidscan-client wheel (clients/python) and prints its path.
#
#   scripts/build-client.sh [OUTDIR]      (default clients/python/dist)
#
# The wheel is built from this tree with the dev venv's setuptools and grpcio-tools
# (--no-build-isolation: offline, and the versions constraints.txt pins); setup.py
# generates the stubs from protos/ first. Set CLIENT_BUILD_ISOLATION=1 to let pip
# fetch the build requirements of clients/python/pyproject.toml instead, as any
# `pip wheel clients/python` would.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=$(realpath -m "${1:-clients/python/dist}")
mkdir -p "$out"
rm -f "$out"/vidscan_client-*.whl
isolation=(--no-build-isolation)
if [[ ${CLIENT_BUILD_ISOLATION:-} == 1 ]]; then isolation=(); fi
# build/ is setuptools' scratch tree: a stale one could carry files no longer in the source.
rm -rf clients/python/build
"$PY" -m pip wheel --quiet --no-deps "${isolation[@]}" -c constraints.txt -w "$out" ./clients/python >&2
rm -rf clients/python/build clients/python/*.egg-info
wheels=("$out"/vidscan_client-*.whl)
if [[ ${#wheels[@]} -ne 1 || ! -f ${wheels[0]} ]]; then
  echo "build-client: expected one vidscan_client wheel in $out" >&2
  exit 1
fi
echo "${wheels[0]}"
