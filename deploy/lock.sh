#!/usr/bin/env bash
# Refresh uv.lock, and what derives from it, to the newest releases pyproject.toml admits:
#   deploy/lock.sh                        # every package
#   deploy/lock.sh --upgrade-package X    # one package (any `uv lock` flags)
# Then run ./test.sh and commit uv.lock, deploy/node-requirements.txt and proto/ in one
# commit: a new version is a deliberate change with the suite green.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/venv.sh
ensure_venv
if [ $# -eq 0 ]; then set -- --upgrade; fi
.venv/bin/uv lock "$@"
node_requirements >deploy/node-requirements.txt
ensure_venv
.venv/bin/python -m proto.generate
git status --short uv.lock deploy/node-requirements.txt proto/
