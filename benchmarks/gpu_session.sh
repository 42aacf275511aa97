#!/usr/bin/env bash
# Everything issue #6 needs from a GPU, as one prepared device call: the kernel tests on the GPU (the real
# 26B-A4B sizes included), `dgls doctor --load` and `dgls infill` on CUDA with the shipped model, and
# benchmarks/gpu_speed.py, inside one time budget. A lent GPU comes with about 15 minutes of device time, the
# machine's start included, and no network; one run takes about 7.5 minutes (with the start, 9 to 10 of the 15),
# so a second try after a broken step must be shorter: DGLS_SESSION_BUDGET_S=200 and a timeout_s of 270.
#
# 1. Here, right before the device call (fetches what the GPU machine lacks into .whl/, which git ignores
#    through .git/info/exclude, and records the commit in .whl/COMMIT):
#        bash benchmarks/gpu_session.sh --fetch
# 2. The device call (the device tool's `run`):
#        command: bash benchmarks/gpu_session.sh      carry: [".whl"]      timeout_s: 540
# 3. Here, from the files that come back (files_at): gpu_speed.md goes into benchmarks/RESULTS.md; the
#    closing note quotes kernel_tests.txt, doctor.json and infill.json.
#
# Files in $OUT (at most 8 come back): session.txt (the machine and versions, each step's exit status and seconds,
# the end of each step's stderr), kernel_tests.txt, doctor.json, infill.json, gpu_speed.log, and gpu_speed.md and
# gpu_speed.json (rewritten after every row).
#
# The GPU machine's image (device tool, KINDS.md) has torch, triton, pytest, tokenizers, safetensors and
# huggingface_hub, but transformers 5.17 (DiffusionGemma arrived later: 5.23.0 is carried) and no tree-sitter.
# DGLS_SESSION_BUDGET_S (default 450) is the whole run's budget in seconds; DGLS_WHEEL_PYTHON (default 3.12, the
# GPU machine's Python) picks the wheels --fetch takes; DGLS_PYTHON (default python3) runs everything;
# DGLS_WHEEL_DIR (default .whl) holds the wheels and COMMIT; DGLS_SESSION_SMOKE=1 checks this script on a CPU
# (a few kernel tests, gpu_speed --tiny: not a result; tests/benchmarks/test_gpu_session.py runs it so in CI).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${DGLS_PYTHON:-python3}
WHEELS=(transformers==5.23.0 tree-sitter==0.26.1 tree-sitter-python==0.25.0)

source benchmarks/device_env.sh
WHL=${DGLS_WHEEL_DIR:-.whl}
if [[ ${1:-} == --fetch ]]; then
    device_fetch benchmarks/gpu_session.sh "${WHEELS[@]}"
    exit 0
fi

: "${OUT:?OUT must name the folder whose files come back (the device tool sets it)}"
BUDGET=${DGLS_SESSION_BUDGET_S:-450}
SMOKE=${DGLS_SESSION_SMOKE:-0}
START=$SECONDS
FAILED=()
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

device_setup benchmarks/gpu_session.sh

# --- the kernel tests on the GPU (the tests of the benchmark scripts, kernel_build's included, are in
# tests/benchmarks: CPU-only)
tests=(tests/kernels)
[[ $SMOKE == 1 ]] && tests=(tests/kernels/test_registry.py)
# Most of this step is Triton compiling each kernel specialization the tests launch (tens of them): pytest-xdist,
# which the GPU image has, spreads that over 8 processes (the compiled kernels are cached on disk for what follows)
"$PY" -c "import xdist" 2> /dev/null && tests+=(-n 8)
step kernel_tests 150 "$OUT/kernel_tests.txt" "$PY" -P -m pytest -q -p no:cacheprovider -rs "${tests[@]}"
tail -5 "$OUT/kernel_tests.txt"

# --- the product on CUDA: which kernels are in use, and the README's infill on the shipped model
step doctor 90 "$OUT/doctor.json" dgls doctor --load --json
step infill 60 "$OUT/infill.json" dgls infill examples/fib.py --line 7 --col 9 --candidates 8 --json
head -c 3000 "$OUT/doctor.json" "$OUT/infill.json"
echo

# --- the speed table: whatever the budget leaves, less 60 s for the row under way and the report
speed=(benchmarks/gpu_speed.py)
[[ $SMOKE == 1 ]] && speed+=(--tiny --device cpu --steps 2 --warmup 0 --canvases 4 --prefixes 70 --infill-steps 1)
speed_budget=$(( $(left) - 60 ))
if (( speed_budget < 30 )); then
    echo "gpu_speed: not run, $(left) s of the budget left" | tee -a "$OUT/session.txt"
else
    step gpu_speed $(( speed_budget + 50 )) "$OUT/gpu_speed.log" "$PY" -P "${speed[@]}" --budget-s "$speed_budget" \
        --out "$OUT"
    grep -v '^{' "$OUT/gpu_speed.log" | tail -40
fi
rm -rf "$site"
echo "session: $((SECONDS - START)) s of $BUDGET; failed steps: ${FAILED[*]:-none}" | tee -a "$OUT/session.txt"
(( ${#FAILED[@]} == 0 ))
