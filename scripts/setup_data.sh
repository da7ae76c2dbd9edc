#!/usr/bin/env bash
# Installs the offline data sets the paper experiments use (nothing downloads at run time).
# Usage: scripts/setup_data.sh PYTHON
set -euo pipefail
PY=${1:-python3}
echo "setup_data: nothing to fetch yet"
