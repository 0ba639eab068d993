"""_C's OpenMP runtime next to torch's, in both import orders.

torch loads its own libgomp into the global symbol scope; a release wheel of mlaga_fast carries
another (vendored by auditwheel). Which runtime serves _C depends on the import order (docs/releasing.md,
"OpenMP beside torch"), so each order runs in a fresh process: 2-thread PPR interleaved
with 2-thread torch work, checked against exact PPR (sparse LU) and a float64 NumPy matmul.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from test_ppr_core import check_bound
from helpers.ppr_reference import exact_ppr, random_graph, reference_topk

_SCRIPT = r"""
import json, sys
import numpy as np
if sys.argv[1] == "torch_first":
    import torch
    from mlaga_fast import _C
else:
    from mlaga_fast import _C
    import torch
from mlaga_fast.ppr import ppr_dense, ppr_topk

g = np.load(sys.argv[2])
torch.set_num_threads(2)
dense, mats = [], []
for _ in range(3):  # alternate, so both thread pools are live at once
    mats.append((torch.from_numpy(g["a"]) @ torch.from_numpy(g["a"])).numpy())
    dense.append(ppr_dense(g["indptr"], g["indices"], g["sources"], alpha=0.15, eps=float(g["eps"]), num_threads=2))
idx, val = ppr_topk(g["indptr"], g["indices"], g["sources"], k=8, eps=float(g["eps"]), num_threads=2)
np.savez(sys.argv[3], dense=np.stack(dense), mats=np.stack(mats), idx=idx, val=val)
print(json.dumps(sorted({line.split()[-1] for line in open("/proc/self/maps") if "gomp" in line})))
"""


@pytest.mark.parametrize("order", ["torch_first", "c_first"])
def test_ppr_with_two_threads_beside_torch(order, tmp_path):
    rng = np.random.default_rng(11)
    indptr, indices = random_graph(rng, 300, 1500, loops=False, dups=False)
    sources = rng.integers(0, 300, 48)
    eps = 1e-6
    a = rng.standard_normal((192, 192)).astype(np.float32)
    np.savez(tmp_path / "in.npz", indptr=indptr, indices=indices, sources=sources, eps=eps, a=a)
    res = subprocess.run([sys.executable, "-c", _SCRIPT, order, str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                         capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)  # not the repo root: import the installed package
    assert res.returncode == 0, res.stderr[-2000:]
    libs = json.loads(res.stdout.strip().splitlines()[-1])  # the libgomp files mapped, for the message
    out = np.load(tmp_path / "out.npz")

    pi = exact_ppr(indptr, indices, sources, 0.15)  # [S, N] float64
    for p in out["dense"]:
        check_bound(indptr, pi, p, eps)
    # Sources are split between threads, each computed by one thread: runs must agree exactly.
    assert all(np.array_equal(p, out["dense"][0]) for p in out["dense"]), libs
    for i, s in enumerate(sources):
        ref_idx, ref_val = reference_topk(out["dense"][0][i], 8, int(s), exclude_source=True)
        np.testing.assert_array_equal(out["idx"][i], ref_idx)
        np.testing.assert_array_equal(out["val"][i], ref_val)
    ref = a.astype(np.float64) @ a.astype(np.float64)
    for m in out["mats"]:  # torch's own OpenMP work is unharmed by _C's runtime
        np.testing.assert_allclose(m, ref, rtol=1e-4, atol=1e-3)
