#!/usr/bin/env bash
# The body of `make test` once set-up is done: the whole suite against real services.
# pytest's exit code 5 ("no tests collected") is reported as a failure on purpose —
# a test command that runs nothing must not look green.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "make test: pytest collected no tests — treating that as a failure" >&2
  exit 1
fi
exit "$rc"
