#!/usr/bin/env bash
# Generates the Python stubs from protos/ into gen/python (never edited by hand) and
# lays out the googleapis protos that buf needs, taken from the installed
# googleapis-common-protos package.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
site=$("$PY" -c 'import google.api, pathlib; print(pathlib.Path(google.api.__path__[0]).parent.parent)')

rm -rf .build/googleapis && mkdir -p .build/googleapis/google
for dir in api rpc; do
  mkdir -p ".build/googleapis/google/$dir"
  cp "$site/google/$dir/"*.proto ".build/googleapis/google/$dir/"
done

out=gen/python
rm -rf "$out" && mkdir -p "$out"
wkt=$("$PY" -c 'import grpc_tools, pathlib; print(pathlib.Path(grpc_tools.__file__).parent / "_proto")')
mapfile -t files < <(cd protos && find vidscan -name '*.proto' | sort)
"$PY" -m grpc_tools.protoc -I protos -I .build/googleapis -I "$wkt" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" "${files[@]}"
# The generated modules import `vidscan.v1...`; make them a regular package.
find "$out/vidscan" -type d -exec touch {}/__init__.py \;
echo "generated ${#files[@]} proto files into $out"
