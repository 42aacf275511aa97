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
# (a few kernel tests, gpu_speed --tiny: not a result; tests/kernels/test_gpu_session.py runs it so in CI).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${DGLS_PYTHON:-python3}
WHEELS=(transformers==5.23.0 tree-sitter==0.26.1 tree-sitter-python==0.25.0)

if [[ ${1:-} == --fetch ]]; then
    set -e
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    rm -rf .whl  # one wheel of each package, for one Python: two stop the install there
    mkdir -p .whl
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${DGLS_WHEEL_PYTHON:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}" 2>&1 | grep -v "^WARNING: Location" || true
    (( $(ls .whl/*.whl | wc -l) == ${#WHEELS[@]} )) || { echo "expected ${#WHEELS[@]} wheels in .whl"; exit 3; }
    commit=$(git rev-parse --short HEAD)
    [[ -z $(git status --porcelain --untracked-files=no) ]] || commit+=" (uncommitted changes)"
    echo "$commit" > .whl/COMMIT
    git ls-files -z | xargs -0 sha256sum > .whl/TREE.sha256  # the GPU copy has no .git: it checks these instead
    ls -l .whl
    echo "commit recorded for the GPU run: $commit"
    exit 0
fi

: "${OUT:?OUT must name the folder whose files come back (the device tool sets it)}"
BUDGET=${DGLS_SESSION_BUDGET_S:-450}
SMOKE=${DGLS_SESSION_SMOKE:-0}
WHL=${DGLS_WHEEL_DIR:-.whl}
START=$SECONDS
FAILED=()
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
left() { echo $((BUDGET - (SECONDS - START))); }
step() {  # step NAME TIMEOUT_S OUTFILE CMD...: stdout to OUTFILE; status and the end of stderr to session.txt
    local name=$1 limit=$2 log=$3 t0=$SECONDS rc
    shift 3
    echo "== $name (at $((SECONDS - START)) s, limit $limit s)"
    timeout --signal=INT --kill-after=15 "$limit" "$@" > "$log" 2> "$site/$name.stderr"
    rc=$?
    echo "$name: exit $rc in $((SECONDS - t0)) s" | tee -a "$OUT/session.txt"
    if [[ -s $site/$name.stderr ]]; then
        { echo "--- $name stderr, last 40 lines"; tail -40 "$site/$name.stderr"; echo "---"; } >> "$OUT/session.txt"
    fi
    (( rc == 0 )) || FAILED+=("$name")
    return $rc
}

# --- set up: the carried wheels, and dgls importable from this tree without installing it (dgls.model = model/,
# dgls.kernels = kernels/, as pyproject maps them, through a folder of links outside the tree; every Python runs
# with -P, so that the tree's own dgls/, which lacks those two, is not found first from the working directory)
[[ -f $WHL/COMMIT ]] || { echo "no $WHL/COMMIT: run 'bash benchmarks/gpu_session.sh --fetch' first, carry .whl"; exit 3; }
DGLS_COMMIT=$(cat "$WHL/COMMIT")
if [[ -f $WHL/TREE.sha256 ]] && ! sha256sum -c --quiet "$WHL/TREE.sha256" > /dev/null 2>&1; then
    DGLS_COMMIT+=" (the tree differs from the one --fetch saw: run --fetch again before the device call)"
fi
export DGLS_COMMIT
site=$(mktemp -d)
if compgen -G "$WHL/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site/lib" "$WHL"/*.whl \
        || { echo "installing the carried wheels failed"; exit 3; }
    "$PY" -m compileall -q -j 0 "$site/lib" > /dev/null  # once, in parallel, not in every process that imports it
fi
mkdir -p "$site/src/dgls" "$site/bin"
for f in "$PWD"/dgls/*; do ln -s "$f" "$site/src/dgls/"; done
ln -s "$PWD/model" "$site/src/dgls/model"
ln -s "$PWD/kernels" "$site/src/dgls/kernels"
printf '#!/bin/sh\nexec "%s" -P -c "import sys; from dgls.cli import main; sys.exit(main())" "$@"\n' "$PY" > "$site/bin/dgls"
chmod +x "$site/bin/dgls"
export PYTHONPATH=$site/lib:$site/src${PYTHONPATH:+:$PYTHONPATH} PATH=$site/bin:$PATH

{
    echo "commit: $DGLS_COMMIT"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv 2>&1
    "$PY" -P -c '
import platform, torch, transformers, dgls
try:
    import triton; tv = triton.__version__
except ImportError:
    tv = None
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), triton {tv}, "
      f"transformers {transformers.__version__}; dgls from {dgls.__file__}")
import dgls.kernels, dgls.model
print(f"dgls.model from {dgls.model.__file__}, dgls.kernels from {dgls.kernels.__file__}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"{p.name}: {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, capability {p.major}.{p.minor}")
'
} >> "$OUT/session.txt" 2>&1
cat "$OUT/session.txt"
grep -q "dgls.model from $site/src/dgls/model/" "$OUT/session.txt" \
    || { echo "dgls.model does not come from the links in $site/src: every result would be about other code"; exit 3; }

# --- the kernel tests on the GPU (the build test compiles for other GPUs on the CPU; the script tests are CPU-only)
tests=(tests/kernels --ignore tests/kernels/test_kernel_build.py --ignore tests/kernels/test_gpu_speed_script.py
       --ignore tests/kernels/test_gpu_session.py)
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
