#!/usr/bin/env bash
# `buf breaking` against the protos of the previous commit. The previous commit's
# tree is exported to a temp dir and given the same googleapis protos, because the
# workspace's second module (.build/googleapis) is build output, not in git.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=${BUF:-.venv/bin/buf}
if ! git rev-parse -q --verify HEAD~1 >/dev/null; then
  echo "buf breaking: no previous commit to compare with; skipped"
  exit 0
fi
prev=$(mktemp -d)
trap 'rm -rf "$prev"' EXIT
git archive HEAD~1 | tar -x -C "$prev"
if [ ! -f "$prev/buf.yaml" ] || [ ! -d "$prev/protos" ]; then
  echo "buf breaking: previous commit has no buf workspace; skipped"
  exit 0
fi
mkdir -p "$prev/.build" && cp -r .build/googleapis "$prev/.build/"
# Compare images of our module only (the googleapis module is not ours to check).
(cd "$prev" && "$OLDPWD/$BUF" build --path protos/vidscan -o image.binpb)
"$BUF" build --path protos/vidscan -o "$prev/current.binpb"
"$BUF" breaking "$prev/current.binpb" --against "$prev/image.binpb"
echo "buf breaking: no breaking changes against HEAD~1"
