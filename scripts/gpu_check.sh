#!/usr/bin/env bash
# GPU check in one call (under 8 minutes on one GPU): the suite's CUDA tests, the measured
# formulation choice on CUDA, a short CUDA benchmark and its report.
#   bash scripts/gpu_check.sh [PYTHON] [DEVICE]     (make gpu-check)
# DEVICE defaults to cuda; nothing here is specific to one vendor beyond torch's device name.
# Without that device the script says so and exits 0 (nothing to check). No GPU kernel is
# made a default by it: it measures what the PyTorch path and the tuner do there.
set -u
PY=${1:-python}
DEVICE=${2:-cuda}
OUT=${GPU_CHECK_OUT:-results/gpu-check}
mkdir -p "$OUT"
export MEPROP_TUNING_DIR="$OUT/tuning"

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.device('$DEVICE').type == 'cpu' or getattr(torch, '$DEVICE').is_available() else 1)"; then
  echo "gpu-check: no $DEVICE device here; nothing to check"
  exit 0
fi
status=0
echo "== 1/4 the suite's $DEVICE cases (timeout 240 s)"
timeout 240 "$PY" -m pytest -q -x -k "$DEVICE" tests/test_functional.py tests/test_lstm.py tests/test_nn.py tests/test_tuning.py \
  || status=1
echo "== 2/4 the measured formulation choice on $DEVICE (timeout 60 s)"
MEPROP_TUNING=on timeout 60 "$PY" - "$DEVICE" <<'PYEOF' || status=1
import json, sys, torch
from meprop import dispatch, tuning
from meprop.functional import meprop_linear
device = sys.argv[1]
for batch, n, k in ((64, 4096, 41), (64, 4096, 1024), (1024, 4096, 41)):
    x = torch.randn(batch, n, device=device, requires_grad=True)
    w = torch.randn(n, n, device=device, requires_grad=True)
    meprop_linear(x, w, k=k).sum().backward()
entries = json.loads(tuning.cache_path().read_text())["entries"]
for key, entry in sorted(entries.items()):
    times = ", ".join(f"{name} {t * 1e3:.3f} ms" for name, t in sorted(entry["times"].items()))
    print(f"{key}: {entry['formulation']}  ({times})")
print("choices:", dispatch.choice_counts())
PYEOF
echo "== 3/4 a short benchmark on $DEVICE (timeout 180 s)"
timeout 180 "$PY" -m meprop bench --profile standard --device "$DEVICE" --workload linear mlp \
  --measurement linear_backward overall_backward --batch 64 1024 --no-progress --out "$OUT/bench" || status=1
echo "== 4/4 the report (timeout 60 s)"
timeout 60 "$PY" -m meprop report "$OUT/bench" --out "$OUT/report" || status=1
echo "gpu-check: $([ $status = 0 ] && echo passed || echo FAILED); results in $OUT"
exit $status
