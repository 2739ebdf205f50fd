#!/usr/bin/env bash
# experiments/inner_throughput/run.sh — pico's CPU inner loop against the same model in
# PyTorch eager, side by side in one run on one machine, plus the sgemm peak measured in
# the same run; writes experiments/inner_throughput/RESULTS.md.
#
#   experiments/inner_throughput/run.sh
#   REPEATS=5 CONFIGS="small medium" DATA=data/kjv experiments/inner_throughput/run.sh
#
# Each round runs, per config, the sgemm peak, pico_bench_inner (Contributor::train_step:
# forward, backward, clipping, AdamW on real batches) and bench_torch.py, alternating which
# of the two goes first. Both see the same environment: the one pico sets for itself
# (pico_bench_inner --print-cpu-env; see common/include/pico/common/cpu_env.h) plus pico's
# malloc tuning spelled as glibc's environment variables. Profiles are taken in separate,
# untimed runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
HERE=experiments/inner_throughput
BUILD=${PICO_BUILD_DIR:-build}
PY=/usr/bin/python3  # Debian's, with python3-torch (the same LibTorch 1.13 and OpenBLAS)
REPEATS=${REPEATS:-5}
CONFIGS=${CONFIGS:-small medium}
DATA=${DATA:-data/kjv}
declare -A STEPS=([small]=${STEPS_SMALL:-12} [medium]=${STEPS_MEDIUM:-6})
WARMUP=${WARMUP:-3}
THREADS=${THREADS:-$(nproc)}

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD" --target pico pico_bench_inner -j "${PICO_JOBS:-2}"
fi

if [[ ! -f "$DATA/manifest.json" ]]; then  # the demo's dataset, made as scripts/demo makes it
  scripts/kjv-corpus "$DATA.txt"
  "$BUILD/pico" data prepare --input "$DATA.txt" --output "$DATA" --vocab-size 4096
fi

# The environment, identical for both sides.
unset PICO_CPU_ENV PICO_NO_REEXEC PICO_CPU_ENV_APPLIED PICO_GEMM PICO_FUSED_KERNELS
ENV_BEFORE=$(env | grep -E '^(OMP_|GOMP_|OPENBLAS_|MALLOC_)' | sort | tr '\n' ' ' || true)
CPU_ENV=$("$BUILD/pico_bench_inner" --print-cpu-env)  # fails the script if the driver does not run
eval "$CPU_ENV"
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_TOP_PAD_=67108864
export PICO_NO_REEXEC=1  # pico must not change it again (its malloc tuning is the same as above)
ENV_USED=$(env | grep -E '^(OMP_|GOMP_|OPENBLAS_|MALLOC_)' | sort | tr '\n' ' ')

WORK=$HERE/work/$(date +%Y%m%d-%H%M%S)
mkdir -p "$WORK"
{
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
  echo "cores=$(nproc)"
  echo "flags_avx512=$(grep -q avx512f /proc/cpuinfo && echo yes || echo no)"
  echo "mem=$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel=$(uname -r)"
  echo "os=$(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "torch=$($PY -c 'import torch; print(torch.__version__)')"
  echo "openblas=$(dpkg-query -W -f='${Version}' libopenblas0-pthread 2>/dev/null || echo '?')"
  echo "git=$(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
  echo "loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "env_before=$ENV_BEFORE"
  echo "env_used=$ENV_USED"
  echo "data=$DATA"
  echo "command=$(env | grep -E '^(REPEATS|CONFIGS|DATA|STEPS_SMALL|STEPS_MEDIUM|WARMUP|THREADS|ABLATE|SKIP_BUILD)=' | sort | tr '\n' ' ')$0"
  echo "threads=$THREADS"
  echo "repeats=$REPEATS"
  echo "warmup=$WARMUP"
  for c in $CONFIGS; do echo "steps_$c=${STEPS[$c]}"; done
} > "$WORK/machine.txt"

run_pico() {  # config round
  "$BUILD/pico_bench_inner" --config "$HERE/$1.yaml" --set "data.path=$DATA" --threads "$THREADS" \
    --steps "${STEPS[$1]}" --warmup "$WARMUP" > "$WORK/pico_$1_$2.json"
}
run_plain() {  # pico with its fused kernels off: the plain-op model pico had before this work
  PICO_FUSED_KERNELS=0 PICO_GEMM=blas "$BUILD/pico_bench_inner" --config "$HERE/$1.yaml" --set "data.path=$DATA" \
    --threads "$THREADS" --steps "${STEPS[$1]}" --warmup "$WARMUP" > "$WORK/plain_$1_$2.json"
}
run_torch() {
  $PY "$HERE/bench_torch.py" --config "$HERE/$1.yaml" --data "$DATA" --threads "$THREADS" \
    --steps "${STEPS[$1]}" --warmup "$WARMUP" > "$WORK/torch_$1_$2.json"
}

for r in $(seq "$REPEATS"); do
  for c in $CONFIGS; do
    echo "[inner_throughput] round $r/$REPEATS, $c"
    cut -d' ' -f1-3 /proc/loadavg > "$WORK/load_${c}_$r.txt"  # the machine is shared: say how busy it was
    "$BUILD/pico_bench_inner" --peak --threads "$THREADS" > "$WORK/peak_${c}_$r.json"
    if ((r % 2)); then run_pico "$c" "$r"; run_torch "$c" "$r"; else run_torch "$c" "$r"; run_pico "$c" "$r"; fi
    run_plain "$c" "$r"
  done
done

# Thread and library settings, one at a time, on the small model (pico; paired per round).
declare -A ABLATION=(
  [as_used]=""
  [openblas_haswell]="OPENBLAS_CORETYPE=Haswell"
  [omp_active]="OMP_WAIT_POLICY=active"
  [malloc_default]="-u MALLOC_MMAP_MAX_ -u MALLOC_TRIM_THRESHOLD_ -u MALLOC_TOP_PAD_ PICO_CPU_ENV=keep"
  [gemm_openblas]="PICO_GEMM=blas"
  [openblas_1_thread]="OPENBLAS_NUM_THREADS=1"
)
if [[ " $CONFIGS " == *" small "* && "${ABLATE:-1}" == 1 ]]; then
  for r in $(seq "$REPEATS"); do
    echo "[inner_throughput] settings, round $r/$REPEATS"
    for name in as_used openblas_haswell omp_active malloc_default gemm_openblas openblas_1_thread; do
      # shellcheck disable=SC2086  # word splitting of the assignments is intended
      env ${ABLATION[$name]} "$BUILD/pico_bench_inner" --config "$HERE/small.yaml" --set "data.path=$DATA" \
        --threads "$THREADS" --steps "${STEPS[small]}" --warmup "$WARMUP" > "$WORK/ablation_${name}_$r.json"
    done
  done
fi

for c in $CONFIGS; do  # where the time goes (separate runs: profiling slows every op a little)
  echo "[inner_throughput] profiles, $c"
  "$BUILD/pico_bench_inner" --config "$HERE/$c.yaml" --set "data.path=$DATA" --threads "$THREADS" \
    --steps 0 --warmup 2 --profile-steps 3 --ops 5 --gemm-shapes 5 > "$WORK/profile_pico_$c.json"
  $PY "$HERE/bench_torch.py" --config "$HERE/$c.yaml" --data "$DATA" --threads "$THREADS" \
    --steps 0 --warmup 2 --profile-steps 3 > "$WORK/profile_torch_$c.json"
done
echo "loadavg_end=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$WORK/machine.txt"

$PY "$HERE/report.py" "$WORK" > "$HERE/RESULTS.md"
echo "[inner_throughput] wrote $HERE/RESULTS.md (raw data in $WORK)"
