#!/usr/bin/env bash
# The prepared GPU training call of issue [model]: one device command that builds a corpus on the GPU machine from
# its own installed Python source (the same builder, licenses checked, the shipped corpus' held-out packages left
# out so that quality stays measurable), trains the dgls-tiny recipe at a larger size in bf16 for what the budget
# leaves, and brings the weights back as bf16 safetensors shards of at most 15 MB (the device tool returns at most
# 8 files of 16 MiB).
#
# 1. Here, right before the device call (the wheels the GPU machine lacks into .whl/, the commit into .whl/COMMIT):
#        bash benchmarks/gpu_train.sh --fetch
# 2. The device call (the device tool's `run`), first thing in a session that has a GPU:
#        command: bash benchmarks/gpu_train.sh      carry: [".whl"]      timeout_s: 560
# 3. Here, from the files that come back (files_at):
#        mkdir -p runs/gpu && tar -xzf FILES_AT/meta.tar.gz -C runs/gpu && cp FILES_AT/model*.safetensors runs/gpu/
#    then score it with benchmarks/quality.py (--cmd "... infill --jsonl --model runs/gpu"), and ship it as the
#    default only if it beats the CPU model on the held-out set and meets the CPU latency target.
#
# Files in $OUT: session.txt (machine, versions, each step's exit status and the end of its stderr), train.log,
# meta.tar.gz (config, generation config, dgls.json, run config, eval curve, tokenizer, corpus summary, shard
# index) and the weight shards model-*.safetensors (or model.safetensors).
#
# DGLS_TRAIN_BUDGET_S (default 480) is the whole run's budget in seconds; the training gets what the set-up and
# the corpus leave, less 60 s for saving. DGLS_TRAIN_SIZE (default "384 8 1536 6 2 64": hidden, layers, MLP,
# heads, KV heads, head dim; about 22 M parameters, 44 MB in bf16, which with dgls-tiny stays within the 64 MB
# the shipped models may take) and DGLS_TRAIN_BATCH (default 64) set the recipe. DGLS_TRAIN_SMOKE=1 checks the
# script on a CPU (a tiny model, the stdlib only, seconds of training: not a result;
# tests/benchmarks/test_gpu_train.py runs it so in CI).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${DGLS_PYTHON:-python3}
WHEELS=(transformers==5.23.0)
source benchmarks/device_env.sh
WHL=${DGLS_WHEEL_DIR:-.whl}
if [[ ${1:-} == --fetch ]]; then
    device_fetch benchmarks/gpu_train.sh "${WHEELS[@]}"
    exit 0
fi

: "${OUT:?OUT must name the folder whose files come back (the device tool sets it)}"
BUDGET=${DGLS_TRAIN_BUDGET_S:-480}
SMOKE=${DGLS_TRAIN_SMOKE:-0}
START=$SECONDS
FAILED=()
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
device_setup benchmarks/gpu_train.sh

read -r HID LAYERS MLP HEADS KV HDIM <<< "${DGLS_TRAIN_SIZE:-384 8 1536 6 2 64}"
BATCH=${DGLS_TRAIN_BATCH:-64}
corpus=(--out "$site/corpus" --site-packages --exclude-packages model/corpus_heldout.txt)
train=(--device cuda --amp bf16 --threads 8)
if [[ $SMOKE == 1 ]]; then
    # the stdlib's own held-out packages are all excluded: hold out more of it, or nothing would be left to evaluate
    corpus=(--out "$site/corpus" --exclude-packages model/corpus_heldout.txt --heldout-fraction 0.3)
    train=(--device cpu --amp off --threads 2)
fi

# --- the corpus: this machine's stdlib and permissively licensed site-packages, deduplicated, split by package
step corpus 180 "$site/corpus.json" "$PY" -P -m dgls.model.data "${corpus[@]}" \
    || { echo "the corpus step failed: see session.txt"; exit 1; }
cp "$site/corpus.json" "$site/corpus/summary.json" 2> /dev/null
head -c 600 "$site/corpus.json"
echo

# --- training: everything the budget leaves, less 60 s for the final evaluation and saving
minutes=$(awk -v s="$(( $(left) - 60 ))" 'BEGIN { m = s / 60; if (m < 0.2) m = 0.2; printf "%.2f", m }')
[[ $SMOKE == 1 ]] && minutes=0.15
echo "training for $minutes minutes (${HID}x${LAYERS}, batch $BATCH)" | tee -a "$OUT/session.txt"
step train $(( $(left) + 30 )) "$OUT/train.log" "$PY" -P -m dgls.model.train --corpus "$site/corpus" \
    --tokenizer model/checkpoints/dgls-tiny --run-dir "$site/run" --out "$site/model" "${train[@]}" \
    --hidden "$HID" --layers "$LAYERS" --intermediate "$MLP" --heads "$HEADS" --kv-heads "$KV" --head-dim "$HDIM" \
    --batch "$BATCH" --lr 1e-3 --warmup 100 --steps 1000000 --max-minutes "$minutes" --lr-by-time \
    --max-prefix 256 --max-suffix 32 --ar-weight 0.5 --eval-every 500 --eval-batches 24 --save-every 1000000 \
    --log-every 50 --seed 0 --save-dtype bfloat16 --max-shard-mb 15
tail -4 "$OUT/train.log"

# --- what comes back: the shards as they are, everything else in one archive
if [[ -d $site/model ]]; then
    cp "$site/model"/model*.safetensors "$OUT/"
    cp "$site/corpus.json" "$site/model/corpus_summary.json"
    tar -czf "$OUT/meta.tar.gz" -C "$site/model" --exclude='model*.safetensors' .
    ls -l "$OUT" | tee -a "$OUT/session.txt"
fi
rm -rf "$site"
echo "session: $((SECONDS - START)) s of $BUDGET; failed steps: ${FAILED[*]:-none}" | tee -a "$OUT/session.txt"
(( ${#FAILED[@]} == 0 ))
