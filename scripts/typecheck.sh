#!/usr/bin/env bash
# mypy --strict on the shipped code and the tests (make test runs this).
#
# keyrotor installs flows/, tasks/ and deployments/ as keyrotor.flows, keyrotor.tasks and keyrotor.deployments
# (pyproject's package-dir). mypy cannot follow that mapping, so it reads the code through a temporary tree of
# symbolic links in the installed shape; its messages name files as keyrotor/flows/rotate.py and so on.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mypy=${MYPY:-$root/.venv/bin/mypy}
mypy=$(cd "$(dirname "$mypy")" && pwd)/$(basename "$mypy")  # absolute: the check runs from another folder
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir "$tree/keyrotor"
for entry in "$root"/keyrotor/*; do
    ln -s "$entry" "$tree/keyrotor/$(basename "$entry")"
done
for package in flows tasks deployments; do
    ln -s "$root/$package" "$tree/keyrotor/$package"
done
ln -s "$root/tests" "$tree/tests"
cd "$tree"
exec "$mypy" --config-file "$root/pyproject.toml" --cache-dir "$root/.mypy_cache" -p keyrotor -p tests "$@"
