# Sourced by the prepared device calls (benchmarks/gpu_session.sh, benchmarks/gpu_train.sh): what both need on a
# GPU machine that has no network, no .git and an older transformers. Two functions:
#
#   device_fetch SCRIPT WHEEL...   here, before the call: the wheels into $WHL (git-ignored), the commit and a hash
#                                  of every tracked file (the copy on the GPU machine has no .git)
#   device_setup SCRIPT            there: the carried wheels installed outside the tree, dgls importable from the
#                                  tree through links ($site/src), the machine and versions into $OUT/session.txt
#
# Expects PY (the Python to run), WHL (the wheel folder) and, for device_setup, OUT; device_setup sets site (a
# temporary folder the caller removes) and exports DGLS_COMMIT, PYTHONPATH and PATH. `step` runs one timed step of
# a call (BUDGET, START and FAILED are the caller's), `left` says how much of BUDGET is left.

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

device_fetch() {
    local script=$1
    shift
    set -e
    grep -qx "/$WHL/" .git/info/exclude 2>/dev/null || echo "/$WHL/" >> .git/info/exclude
    rm -rf "$WHL"  # one wheel of each package, for one Python: two stop the install there
    mkdir -p "$WHL"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "${DGLS_WHEEL_PYTHON:-3.12}" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$WHL" "$@" 2>&1 | grep -v "^WARNING: Location" || true
    (( $(ls "$WHL"/*.whl | wc -l) == $# )) || { echo "expected $# wheels in $WHL"; exit 3; }
    local commit
    commit=$(git rev-parse --short HEAD)
    [[ -z $(git status --porcelain --untracked-files=no) ]] || commit+=" (uncommitted changes)"
    echo "$commit" > "$WHL/COMMIT"
    git ls-files -z | xargs -0 sha256sum > "$WHL/TREE.sha256"  # the GPU copy has no .git: it checks these instead
    ls -l "$WHL"
    echo "commit recorded for the GPU run of $script: $commit"
}

device_setup() {
    local script=$1
    [[ -f $WHL/COMMIT ]] || { echo "no $WHL/COMMIT: run 'bash $script --fetch' first, carry $WHL"; exit 3; }
    DGLS_COMMIT=$(cat "$WHL/COMMIT")
    if [[ -f $WHL/TREE.sha256 ]] && ! sha256sum -c --quiet "$WHL/TREE.sha256" > /dev/null 2>&1; then
        DGLS_COMMIT+=" (the tree differs from the one --fetch saw: run --fetch again before the device call)"
    fi
    export DGLS_COMMIT
    site=$(mktemp -d)
    # The carried wheels, and dgls importable from this tree without installing it (dgls.model = model/,
    # dgls.kernels = kernels/, as pyproject maps them, through a folder of links outside the tree; every Python
    # runs with -P, so that the tree's own dgls/, which lacks those two, is not found first from the working
    # directory)
    if compgen -G "$WHL/*.whl" > /dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site/lib" "$WHL"/*.whl \
            || { echo "installing the carried wheels failed"; exit 3; }
        "$PY" -m compileall -q -j 0 "$site/lib" > /dev/null  # once, in parallel, not in every process that imports it
    fi
    mkdir -p "$site/src/dgls" "$site/bin"
    for f in "$PWD"/dgls/*; do ln -s "$f" "$site/src/dgls/"; done
    ln -s "$PWD/model" "$site/src/dgls/model"
    ln -s "$PWD/kernels" "$site/src/dgls/kernels"
    printf '#!/bin/sh\nexec "%s" -P -c "import sys; from dgls.cli import main; sys.exit(main())" "$@"\n' "$PY" \
        > "$site/bin/dgls"
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
}
