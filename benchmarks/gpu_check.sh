#!/usr/bin/env bash
# GPU check (issue 15), one script for a CUDA machine, under 8 minutes on one H200:
#   1. build the package with its CUDA kernels (for this GPU's architecture only);
#   2. run the CUDA and Triton tests (the CUDA PPR and cross-attention test files, the core fuzz
#      replay, which on a GPU also feeds real device capsules to the CUDA entry, and every other
#      test marked `cuda`);
#   3. the PPR benchmark on the 1M-node / 20M-edge graph: the CUDA kernel against the CPU kernel
#      on all cores, with the CUDA top-k checked against the error bound;
#   4. the cross-attention benchmark against every SDPA backend at the aligner's real shape
#      (B 4096, nq 32, L 334, d 1024 = 8 heads x 128, bf16);
# and write OUT_DIR/summary.json (each step's status and seconds; the benchmarks' own JSON beside it).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # default: benchmarks/results/gpu_check
#
# Needs python3 with torch, triton, numpy, scipy, pytest, hypothesis, pybind11, scikit-build-core,
# and nvcc. Nothing is downloaded: the package is built with --no-deps --no-build-isolation into a
# virtual environment that sees the system's packages. Without a CUDA device it stops after the
# build with exit status 2 and says so; a failed step gives exit status 1.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_DIR=$(mkdir -p "${1:-$ROOT/benchmarks/results/gpu_check}" && cd "${1:-$ROOT/benchmarks/results/gpu_check}" && pwd)
PYTHON=${PYTHON:-python3}
SITE=${GPU_CHECK_SITE:-/tmp/mlaga_gpu_check_site}
read -r LIMIT_BUILD LIMIT_TESTS LIMIT_PPR LIMIT_ATTN <<<"${GPU_CHECK_LIMITS:-240 200 150 120}"
START=$(date +%s)
STEPS=()  # "name status seconds" records for the summary

log() { printf 'gpu_check: %s\n' "$*" >&2; }

# run_step NAME TIMEOUT_S CMD...: runs CMD with a time limit, its output in OUT_DIR/NAME.log.
# A shell function as CMD runs through `bash -c` (timeout runs programs only), so each one used
# that way is exported with the variables it reads.
run_step() {
  local name=$1 limit=$2 t0 rc status
  shift 2
  t0=$(date +%s)
  log "$name (limit ${limit} s) ..."
  timeout --kill-after=10 "$limit" "$@" >"$OUT_DIR/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=passed ;;
    124 | 137) status=timed_out ;;
    *) status=failed ;;
  esac
  STEPS+=("$name $status $(($(date +%s) - t0))")
  log "$name: $status in $(($(date +%s) - t0)) s (log: $OUT_DIR/$name.log)"
  [ "$status" = passed ]
}

write_summary() {
  local overall=$1 message=$2
  "$PYTHON" - "$OUT_DIR/summary.json" "$overall" "$message" "$(($(date +%s) - START))" "${STEPS[@]}" <<'EOF'
import json, os, platform, subprocess, sys
path, overall, message, total = sys.argv[1:5]
steps = [dict(zip(("step", "status", "seconds"), s.split())) for s in sys.argv[5:]]
for s in steps:
    s["seconds"] = int(s["seconds"])
info = {"host": platform.node(), "python": platform.python_version()}
try:
    import torch
    info["torch"] = torch.__version__
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
except Exception as e:  # noqa: BLE001 - a summary is written whatever the environment
    info["torch_error"] = repr(e)
try:
    info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=20).stdout.strip()
except (OSError, subprocess.SubprocessError):
    info["driver"] = None
results = {os.path.splitext(f)[0]: f for f in sorted(os.listdir(os.path.dirname(path))) if f.endswith(".json")
           and f != "summary.json"}
json.dump({"check": "gpu_check", "status": overall, "message": message, "total_seconds": int(total),
           "steps": steps, "machine": info, "result_files": results}, open(path, "w"), indent=2, sort_keys=True)
EOF
  log "$message (summary: $OUT_DIR/summary.json, $(($(date +%s) - START)) s in all)"
}

# --- 1. build --------------------------------------------------------------------------------
if ! command -v nvcc >/dev/null 2>&1; then
  STEPS+=("build failed 0")
  write_summary failed "nvcc is not on PATH: the CUDA kernels cannot be built"
  exit 1
fi
ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .')
ARCH=${ARCH:-90}  # no GPU visible: build for Hopper, as a CUDA machine here would need
# shellcheck disable=SC2329  # invoked through run_step's `bash -c`
build() {
  rm -rf "$SITE" &&
    MLAGA_CUDA=ON MLAGA_CUDA_ARCHS="$ARCH" "$PYTHON" -m pip install --no-deps --no-build-isolation --no-index \
      --disable-pip-version-check -q --target "$SITE" "$ROOT" &&
    (cd /tmp && "$PYTHON" -c "import mlaga_fast._C as C; assert C.built_with_cuda(); print('built for sm_$ARCH')")
}
# The built package, never the source folder or another install: first on the path, and no cwd.
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1
export -f build
export PYTHON SITE ARCH ROOT
if ! run_step build "$LIMIT_BUILD" bash -c build; then
  write_summary failed "the build failed; see build.log"
  exit 1
fi
PY=$PYTHON

# --- 2. a device, or stop here ---------------------------------------------------------------
why=$(cd /tmp && "$PY" -c "
import mlaga_fast._C as C
try:
    import torch
except ImportError as e:
    print(f'torch is not importable ({e})'); raise SystemExit
if not torch.cuda.is_available():
    print('torch.cuda.is_available() is False')
elif C.cuda_device_count() < 1:
    print(f'_C sees no CUDA device ({C.cuda_status()})')
" 2>&1)
if [ -n "$why" ]; then
  STEPS+=("device no_cuda_device 0")
  write_summary no_cuda_device "no usable CUDA device: $why. The build passed; the tests and benchmarks \
need a CUDA machine"
  exit 2
fi

# --- 3. CUDA and Triton tests ------------------------------------------------------------------
# The files whose tests run CUDA or Triton code, whole, then every other test marked `cuda`.
# shellcheck disable=SC2329  # invoked through run_step's `bash -c`
gpu_tests() {
  "$PY" -m pytest -q -p no:cacheprovider "$ROOT/tests/test_ppr_cuda.py" "$ROOT/tests/test_cross_attention.py" \
    "$ROOT/tests/test_core_fuzz.py" &&
    "$PY" -m pytest -q -p no:cacheprovider -m cuda "$ROOT/tests/test_baselines.py"
}
export -f gpu_tests
export PY
status=passed
run_step tests "$LIMIT_TESTS" bash -c gpu_tests || status=failed

# --- 4. PPR: CUDA kernel vs CPU kernel on the 1M-node graph ------------------------------------
run_step ppr "$LIMIT_PPR" "$PY" "$ROOT/benchmarks/bench_ppr.py" --no-pyg --no-real --orders "" --no-table \
  --check-sources 4 --repeats 1 --out "$OUT_DIR/ppr_cuda.json" || status=failed

# --- 5. cross-attention at the aligner's shape vs every SDPA backend ----------------------------
run_step cross_attention "$LIMIT_ATTN" "$PY" "$ROOT/benchmarks/bench_cross_attention.py" --device cuda --batch 4096 \
  --dtypes bf16 --nq 32 --L 334 --dim 1024 --heads 8 --out "$OUT_DIR/cross_attention_cuda.json" || status=failed

if [ "$status" = passed ]; then
  write_summary passed "every step passed"
  exit 0
fi
write_summary failed "a step failed or ran out of time; see its log"
exit 1
