#!/usr/bin/env bash
# The device run: run first whenever a GPU is available. Everything is written under $OUT; a summary comes last.
#
#   OUT=/some/folder benchmarks/gpu/run.sh              on a GPU (≈ 8 minutes on one H100/H200)
#   OUT=/tmp/x LEARNLOSS_GPU_DRY_RUN=1 benchmarks/gpu/run.sh   the same steps on a CPU at toy sizes
#
# Steps, in order, each with its own time limit (timeout; Ctrl-C first, so what is done is kept), each failure
# recorded and the next step run; before each step the time left is checked and a step that no longer fits is
# skipped, so the run stops cleanly with what is done:
#   environment  the code version (git commit or tree hash) and the environment (torch, CUDA, the GPU's name)
#   tests        python -m pytest -m cuda tests/cuda   (every CUDA path; outcomes recorded as they happen)
#   throughput   benchmarks/bench_speed.py (steady-state step) and benchmarks/bench_vs_reference.py (learnloss's
#                fastest settings against benchmarks/reference_style.py, side by side)
#   trials       benchmarks/gpu/trials.py: fmnist-paper, learning-loss and random, in the time left
# Outputs in $OUT (at most 8 files, so that all come back from a machine that returns 8): summary.txt,
# summary.json, run.log, throughput.json, trials.json and raw.tar.gz (every step's log and raw JSON, each trial's
# results.json, learning curve and log). benchmarks/gpu/README.md says how to launch it and what to carry.
#
# Settings (environment): LEARNLOSS_GPU_BUDGET_S (480; dry run 240), LEARNLOSS_GPU_STEPS ("tests throughput
# trials"), LEARNLOSS_GPU_DATA_DIR (data-carry/fashion-mnist), LEARNLOSS_GPU_TESTS (pytest arguments),
# LEARNLOSS_GPU_TRIAL_EPOCHS / _SEEDS (trials.py), LEARNLOSS_GPU_KEEP_RAW=1 (keep $OUT/raw unpacked), PYTHON.
set -u
: "${OUT:?set OUT to the folder the results go to}"
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"   # before the cd below: a relative OUT is the caller's
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root" || exit 2
dry="${LEARNLOSS_GPU_DRY_RUN:-0}"
[ "$dry" = 1 ] || dry=0
if [ "$dry" = 1 ]; then budget="${LEARNLOSS_GPU_BUDGET_S:-240}"; else budget="${LEARNLOSS_GPU_BUDGET_S:-480}"; fi
steps="${LEARNLOSS_GPU_STEPS:-tests throughput trials}"
py="${PYTHON:-python3}"
raw="$OUT/raw"
work="$(mktemp -d "${TMPDIR:-/tmp}/learnloss-gpu.XXXXXX")"
log="$OUT/run.log"
reserve=20   # seconds kept for the summary and the packing
start=$(date +%s)
mkdir -p "$raw"
: >"$raw/steps.jsonl"
: >"$log"

export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
elapsed() { echo $(( $(date +%s) - start )); }
left() { echo $(( budget - $(date +%s) + start )); }
say() { echo "run.sh [$(elapsed) s] $*" | tee -a "$log"; }
record() {  # step status rc seconds note
  printf '{"step": "%s", "status": "%s", "rc": %s, "seconds": %s, "note": "%s"}\n' "$1" "$2" "$3" "$4" "$5" \
    >>"$raw/steps.jsonl"
}
# run_step NAME LIMIT COMMAND...: run within min(LIMIT, time left - reserve); Ctrl-C at the limit, kill 20 s later
run_step() {
  local name="$1" limit="$2" rc t0 status
  shift 2
  local room=$(( $(left) - reserve ))
  if [ "$room" -lt 15 ]; then
    say "$name: skipped, ${room} s left"
    record "$name" skipped null 0 "no time left"
    return 0
  fi
  [ "$limit" -gt "$room" ] && limit="$room"
  say "$name: start (limit $limit s)"
  t0=$(date +%s)
  timeout -s INT -k 20 "$limit" "$@" 2>&1 | tee -a "$raw/$name.log" >>"$log"
  rc=${PIPESTATUS[0]}
  case "$rc" in
    0) status=ok ;;
    124|137) status=timeout ;;
    *) status=failed ;;
  esac
  say "$name: $status (exit $rc, $(( $(date +%s) - t0 )) s)"
  record "$name" "$status" "$rc" "$(( $(date +%s) - t0 ))" "limit ${limit} s"
  return 0
}
wants() { case " $steps " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

say "learnloss device run in $root -> $OUT (dry run: $dry, budget $budget s, steps: $steps, python: $py)"

# --- the serve extra, carried as wheels where the machine's Python lacks it (prepare.sh downloads them)
if ! "$py" -c "import fastapi" >/dev/null 2>&1 && ls "$root"/data-carry/wheels/*.whl >/dev/null 2>&1; then
  if "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$work/site" \
      "$root"/data-carry/wheels/*.whl >>"$log" 2>&1; then
    export PYTHONPATH="$PYTHONPATH:$work/site"
    say "serve extra installed from data-carry/wheels"
  else
    say "serve extra: installing data-carry/wheels failed; the served-app test will skip"
  fi
fi

# --- environment and code version (once, shared by every step through LEARNLOSS_CODE_VERSION)
if version="$("$py" benchmarks/gpu/provenance.py --code-only 2>>"$log")"; then
  export LEARNLOSS_CODE_VERSION="$version"
fi
device=cuda
[ "$dry" = 1 ] && device=cpu
t0=$(date +%s)
if timeout -k 10 90 "$py" benchmarks/gpu/provenance.py --device "$device" >"$raw/env.json" 2>>"$log"; then
  record environment ok 0 "$(( $(date +%s) - t0 ))" ""
else
  record environment failed 1 "$(( $(date +%s) - t0 ))" "see run.log"
fi
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >"$raw/nvidia-smi.txt" 2>&1
if [ "$dry" = 0 ] && ! "$py" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>>"$log"; then
  say "WARNING: CUDA is not available here: the CUDA tests skip and the GPU steps fail (LEARNLOSS_GPU_DRY_RUN=1 is the CPU run)"
fi

# --- data: Fashion-MNIST from the carried folder (the dry run uses the bundled digits)
data_dir="${LEARNLOSS_GPU_DATA_DIR:-$root/data-carry/fashion-mnist}"
have_fmnist=0
if [ "$dry" = 0 ] && "$py" -c "import sys; from learnloss.data import load_dataset; load_dataset('fashion-mnist', sys.argv[1], download=False)" "$data_dir" >>"$log" 2>&1; then
  have_fmnist=1
fi
[ "$dry" = 0 ] && say "Fashion-MNIST in $data_dir: $([ $have_fmnist = 1 ] && echo found || echo 'NOT found (run benchmarks/gpu/prepare.sh and carry data-carry)')"

# --- (a) the CUDA tests
if wants tests; then
  if [ "$dry" = 1 ]; then
    # a few of each kind on the CPU: the script is what the dry run proves, the GPU proves the paths
    tests_args="${LEARNLOSS_GPU_TESTS:-tests/cuda/test_cuda_loop.py::test_a_cycle_trains_evaluates_and_scores[fp32-channels-last-resident] tests/cuda/test_cuda_loop.py::test_a_cycle_trains_evaluates_and_scores[fp16-nchw-host] tests/cuda/test_cuda_loop.py::test_the_same_scores_give_the_same_selection_on_the_gpu[core-set]}"
    export LEARNLOSS_TEST_DEVICE=cpu
  else
    tests_args="${LEARNLOSS_GPU_TESTS:-tests/cuda}"
  fi
  export LEARNLOSS_TEST_REPORT="$raw/tests.jsonl"
  # shellcheck disable=SC2086  # the test arguments are words
  run_step tests 210 "$py" -m pytest -m cuda $tests_args -p no:cacheprovider -rfEs --junitxml="$raw/tests.xml"
  unset LEARNLOSS_TEST_DEVICE LEARNLOSS_TEST_REPORT
fi

# --- (b) throughput: the steady-state step, then learnloss against the reference side by side
if wants throughput; then
  if [ "$dry" = 1 ]; then
    run_step speed 60 "$py" benchmarks/bench_speed.py throughput --model small-cnn --size 16 --batch-size 16 \
      --steps 2 --repeats 1 --device cpu --out "$raw/speed-b16.json"
    run_step throughput 90 "$py" benchmarks/bench_vs_reference.py --dataset digits --model small-cnn --image-size 16 \
      --labeled 16 --query 16 --cycles 2 --epochs 1 --test 32 --subset 32 --pairs 1 --threads 1 --device cpu \
      --timeout 60 --out "$raw/throughput.json"
  else
    for batch in 128 512; do
      run_step "speed-b$batch" 60 "$py" benchmarks/bench_speed.py throughput --model resnet18 --size 32 \
        --batch-size "$batch" --steps 40 --repeats 3 --device cuda --precision bf16 --channels-last \
        --out "$raw/speed-b$batch.json"
    done
    if [ "$have_fmnist" = 1 ]; then bench_data=(--dataset fashion-mnist --data-dir "$data_dir"); else
      bench_data=(--dataset synthetic); say "throughput: Fashion-MNIST missing, synthetic images instead"; fi
    run_step throughput 170 "$py" benchmarks/bench_vs_reference.py "${bench_data[@]}" --model resnet18 \
      --image-size 32 --labeled 4000 --query 1000 --cycles 2 --epochs 3 --test 10000 --subset 10000 --pairs 2 \
      --device cuda --precision bf16 --channels-last --batch-size 128 --timeout 120 --out "$raw/throughput.json"
  fi
fi

# --- (c) fmnist-paper trials in the time left
if wants trials; then
  room=$(( $(left) - reserve - 10 ))
  if [ "$dry" = 1 ]; then
    run_step trials "$room" "$py" benchmarks/gpu/trials.py --dry-run --seconds $(( room - 5 )) \
      --work "$work/trials" --raw "$raw" --out "$raw/trials.json"
  elif [ "$have_fmnist" = 1 ]; then
    run_step trials "$room" "$py" benchmarks/gpu/trials.py --seconds $(( room - 5 )) --work "$work/trials" \
      --raw "$raw" --out "$raw/trials.json" --throughput "$raw/throughput.json" --data-dir "$data_dir"
  else
    say "trials: skipped, Fashion-MNIST not found in $data_dir"
    record trials skipped null 0 "Fashion-MNIST not found"
  fi
fi

# --- summary and packing
"$py" benchmarks/gpu/summarize.py --out "$OUT" --raw "$raw" --budget "$budget" --elapsed "$(elapsed)" \
  $([ "$dry" = 1 ] && echo --dry-run) >"$work/summary.out" 2>>"$log" || echo "summary failed; see run.log" >"$work/summary.out"
for name in throughput.json trials.json; do
  [ -f "$raw/$name" ] && cp "$raw/$name" "$OUT/$name"
done
bad=$(grep -c -E '"status": "(failed|timeout)"' "$raw/steps.jsonl")
if tar -czf "$OUT/raw.tar.gz" -C "$OUT" raw 2>>"$log" && [ "${LEARNLOSS_GPU_KEEP_RAW:-0}" != 1 ]; then
  rm -rf "$raw"
fi
echo
cat "$OUT/summary.txt" 2>/dev/null || cat "$work/summary.out"
echo "(full record: $OUT/summary.json, run.log, raw.tar.gz; $bad step(s) failed or ran out of time)"
rm -rf "$work"
[ "$bad" = 0 ]
