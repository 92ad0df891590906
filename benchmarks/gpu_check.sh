#!/usr/bin/env bash
# The project's checks that need a GPU, as one command of under 9 minutes on an H100 or H200:
#   1. the CUDA tests: python -m pytest -m cuda (tests/test_cuda.py);
#   2. the benchmark's CUDA section, benchmarks/benchmark.py --cuda: ms per training step of the
#      MNIST DAAE and of the 105x105 Omniglot DAAE and iDAAE, fp32 (TF32) against bf16;
#   3. daae.py --dataset omniglot at the paper's settings (its defaults: 105x105, lr 1e-5, Glorot
#      init, clipping, batch 64, sigma 0.5) on the 5-alphabet subset, for as many epochs as fit in
#      about 5 minutes: the time limit sends SIGINT, on which daae.py saves a checkpoint and stops;
#   4. eval.py all on that run.
# Everything it prints goes to $OUT/gpu_check.log as it goes, so a run cut short still leaves its
# log; each step's exit status is logged, and a failed step does not stop the next. The tests'
# JUnit report and the Omniglot run's log.csv, config.json and eval.json are copied to $OUT too.
# $OUT defaults to ./gpu-check-out.
#
#   bash benchmarks/gpu_check.sh                   # on a GPU
#   bash benchmarks/gpu_check.sh --smoke           # the same steps on the CPU, tiny (SMOKE=1 too): checks the script
#   bash benchmarks/gpu_check.sh --data-dir DIR    # the Omniglot subset in DIR (DATA=DIR too)
#
# The data folder (default gpu-data/omniglot-small, which git ignores) holds images_background/ and
# images_evaluation/, as benchmarks/make_omniglot_small.py unpacks them from images_background_small1.zip.
# PYTHON (default python3) is the interpreter with the project's packages; GPU_CHECK_SECONDS (default 510,
# --smoke 320) the seconds the whole script may take, of which the training gets what the other steps leave.

SMOKE=${SMOKE:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd) || exit 2
DATA=${DATA:-$ROOT/gpu-data/omniglot-small}
OUT=${OUT:-gpu-check-out}
while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --data-dir)
            if [ $# -lt 2 ]; then echo "error: --data-dir needs a folder" >&2; exit 2; fi
            DATA=$2
            shift ;;
        -h | --help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
PY=${PYTHON:-python3}
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)  # relative folders are the caller's, before the cd to the checkout
case "$DATA" in /*) ;; *) DATA=$(pwd)/$DATA ;; esac
cd "$ROOT" || exit 2
LOG=$OUT/gpu_check.log
WORK=$(mktemp -d) || exit 2  # the Omniglot run's folder: its many pictures would not all come back from $OUT
RUN=$WORK/omniglot-daae
export PYTHONUNBUFFERED=1  # the log is written as it goes, not when a buffer fills

# Every line to the terminal and to the log (tee writes what it reads at once).
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
TEE=$!

if [ "$SMOKE" = 1 ]; then
    # The same steps on the CPU, small: the CUDA tests' bodies on the CPU, the benchmark's CUDA code on
    # tiny networks, a few epochs at 28x28, and a short evaluation.
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # tiny networks: more threads only wait for each other
    TESTS=(env CUDA_TESTS_ON_CPU=1 "$PY" -m pytest -m cuda)
    BENCHMARK=("$PY" benchmarks/benchmark.py --cuda --tiny)
    TRAIN_FLAGS=(--image-size 28 --device cpu --save-every 2)
    EVAL_FLAGS=(--device cpu --samples 200 --steps 0 2)
    TESTS_LIMIT=150 BENCHMARK_LIMIT=60 TRAIN_LIMIT=20 EVAL_LIMIT=90 BUDGET=${GPU_CHECK_SECONDS:-320}
else
    TESTS=("$PY" -m pytest -m cuda)
    BENCHMARK=("$PY" benchmarks/benchmark.py --cuda)
    # --save-every 200: the checkpoint of the 105x105 networks and their Adam state is 474 MB, and an epoch of
    # the subset is 33 steps; the time limit's SIGINT saves whatever the epoch
    TRAIN_FLAGS=(--device cuda --save-every 200)
    EVAL_FLAGS=(--device cuda)
    # BUDGET: the whole script, under 9 minutes; the training takes what the steps before it leave, at most 5 minutes
    TESTS_LIMIT=180 BENCHMARK_LIMIT=90 TRAIN_LIMIT=300 EVAL_LIMIT=150 BUDGET=${GPU_CHECK_SECONDS:-510}
fi

SUMMARY=()
FAILED=0
# step NAME COMMAND...: run it, log its exit status and time, and go on whatever the status.
# OK lists the statuses that count as success (default 0).
step() {
    local name=$1 start=$SECONDS status
    shift
    echo
    echo "=== $name, $(date -u '+%H:%M:%S UTC'), at ${SECONDS} s: $*"
    "$@"
    status=$?
    local verdict=ok
    case " ${OK:-0} " in *" $status "*) ;; *) verdict=FAILED; FAILED=$((FAILED + 1)) ;; esac
    [ "$status" = 124 ] && verdict="$verdict (cut at its time limit)"
    echo "=== $name: exit status $status after $((SECONDS - start)) s: $verdict"
    SUMMARY+=("$name: exit status $status, $((SECONDS - start)) s, $verdict")
}

echo "gpu_check.sh$([ "$SMOKE" = 1 ] && echo ' --smoke') in $ROOT, $(date -u '+%Y-%m-%d %H:%M:%S UTC'); log $LOG"
changes=$(git status --porcelain 2>/dev/null | grep -q . && echo ', with uncommitted changes')
echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$changes"
step "environment" "$PY" -c "import sys, torch; print('Python', sys.version.split()[0], '| torch', torch.__version__, \
'| CUDA', torch.version.cuda, '| GPU:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv

# -vv: a line per test as it ends (pytest.ini's -q would print dots), so a log cut short says where
step "CUDA tests" timeout -k 10 "$TESTS_LIMIT" "${TESTS[@]}" -vv -rfEs --durations=15 --junitxml="$OUT/cuda-tests.xml"
step "benchmark, CUDA section" timeout -k 10 "$BENCHMARK_LIMIT" "${BENCHMARK[@]}"

if [ -d "$DATA/images_background" ] && [ -d "$DATA/images_evaluation" ]; then
    train_limit=$((BUDGET - SECONDS - EVAL_LIMIT - 15))  # 15 s: the copies, the summary, the signal's last step
    [ "$train_limit" -gt "$TRAIN_LIMIT" ] && train_limit=$TRAIN_LIMIT
    [ "$train_limit" -lt 10 ] && train_limit=10
    # More epochs than fit: the time limit's SIGINT ends the run after the step in progress, saved (exit
    # status 130, as for Ctrl-C); a run not stopped 60 s later is killed.
    OK="0 130" step "daae.py --dataset omniglot, at most ${train_limit} s" \
        timeout --preserve-status -s INT -k 60 "$train_limit" \
        "$PY" daae.py --dataset omniglot --data-dir "$DATA" --epochs 100000 "${TRAIN_FLAGS[@]}" --out "$RUN"
    for name in log.csv checkpoint.pt config.json; do
        if [ ! -f "$RUN/$name" ]; then
            echo "=== missing: $RUN/$name"
            FAILED=$((FAILED + 1))
            SUMMARY+=("$RUN/$name missing")
        fi
    done
    [ -f "$RUN/log.csv" ] && echo "epochs trained: $(($(wc -l <"$RUN/log.csv") - 1))"
    step "eval.py all" timeout -k 10 "$EVAL_LIMIT" "$PY" eval.py all "$RUN" --data-dir "$DATA" "${EVAL_FLAGS[@]}"
    for name in log.csv config.json eval.json losses.png; do
        [ -f "$RUN/$name" ] && cp "$RUN/$name" "$OUT/omniglot-daae-$name"
    done
else
    echo "=== no $DATA/images_background and images_evaluation: make them with"
    echo "    $PY benchmarks/make_omniglot_small.py --zip images_background_small1.zip --out $DATA"
    FAILED=$((FAILED + 1))
    SUMMARY+=("Omniglot training and eval.py: not run, no data in $DATA")
fi
rm -rf "$WORK"

echo
echo "=== summary, after $SECONDS s:"
printf '  %s\n' "${SUMMARY[@]}"
echo "=== $FAILED failed; log: $LOG"
exec >&- 2>&-  # the log's last lines are written before the script ends
wait "$TEE"
[ "$FAILED" = 0 ]
