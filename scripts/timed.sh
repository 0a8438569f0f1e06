#!/usr/bin/env bash
# Run one layer of `make test` and say how long it took (install, lint, unit tests, integration tests), keeping its
# exit status: the suite's speed is a feature, and each change shows what it costs.
set -uo pipefail
name=$1
shift
start=$(date +%s)
"$@"
status=$?
echo "== ${name}: $(($(date +%s) - start)) s$([ "$status" -ne 0 ] && echo " (failed, exit ${status})")"
exit "$status"
