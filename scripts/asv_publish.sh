#!/usr/bin/env bash
# Publish the asv results as an offline page: reports/asv/index.html.
#   scripts/asv_publish.sh [OUT]        (default OUT=reports/asv, relative to the repository root)
# Python: $MEPROP_PYTHON if set, else .venv/bin/python if present, else python3.
# Runs `asv publish` (HTML into .asv/html) then scripts/asv_offline.py, which vendors
# jQuery/flot/bootstrap from the npm registry the first time (cached in .asv/vendor) and
# embeds the JSON data, so the page opens from disk with no network and no web server.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${MEPROP_PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
OUT=${1:-reports/asv}
if ! "$PY" -c "import asv" 2>/dev/null; then
    echo "asv_publish: asv is not installed for $PY (pip install asv, or make setup)" >&2
    exit 1
fi
if [ -z "$(find .asv/results -name '*.json' ! -name machine.json ! -name benchmarks.json 2>/dev/null | head -1)" ]; then
    echo "asv_publish: no asv results in .asv/results; run 'asv machine --yes' and 'asv run --python=same --set-commit-hash=HEAD' first" >&2
    exit 1
fi
"$PY" -m asv publish
"$PY" scripts/asv_offline.py --html .asv/html --out "$OUT" --vendor-cache .asv/vendor
