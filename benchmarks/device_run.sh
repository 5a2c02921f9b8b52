#!/usr/bin/env bash
# The accelerator rows of issues 11 and 15, in ONE device call (the `device` tool lends a GPU to
# some tasks, 15 minutes of device time in all; one command may run 10 minutes). Prepared and
# smoke-tested on the CPU; on the device it runs the benchmarks already in this folder on the
# default JAX backend (the GPU) and writes their results under $OUT:
#   1. bench_planning  --cases d,bw: the 1024-Garnet suite with the default batch.solve (vmap on
#      an accelerator) against our own single-solve loop, answers checked against float64; the
#      batched dense backup's bandwidth against jnp.sum / copy bandwidths measured in the same run;
#   2. bench_scale: stored sparse sweeps at S = 10^4..10^7 and matrix-free at 10^4..10^8, as a
#      share of the device's read bandwidth measured in the same run;
#   3. bench_accelerated --kinds garnet: the gamma table (0.9 .. 0.9999) of plain VI, Gauss-Seidel,
#      SOR, ranked GS, Anderson and anchored VI, certified against a float64 reference;
#   4. bench_scale --closed-form-exp 8 --dim 3: a matrix-free 3-D grid world of 10^8 states
#      solved to 1e-4 and checked against its closed form, in the time left.
# Each step has its own timeout so that a slow step cannot take the later ones with it; a step
# that times out leaves no result file (its log line says so). Peers (mdpsolver, QuantEcon,
# pymdptoolbox) are not installed on the device image and are not run there.
#
# On the device (repository root; the image has jax with CUDA, flax, optax, chex, scipy):
#   PYTHONUNBUFFERED=1 bash benchmarks/device_run.sh          (timeout_s 590)
# Here, as a smoke test (tiny sizes, seconds per step):
#   OUT=/tmp/device_smoke bash benchmarks/device_run.sh --quick
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:?set OUT to the folder for the results}"
mkdir -p "$out"
quick="${1:-}"
py="${PYTHON:-python3}"
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
start=$SECONDS
budget=${DEVICE_BUDGET_S:-570}
left() { echo $((budget - (SECONDS - start))); }

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  local t=$(left)
  ((limit > t)) && limit=$t
  if ((limit < 20)); then
    echo "[$name] skipped: ${t} s left" | tee -a "$out/device_log.txt"
    return
  fi
  local t0=$SECONDS
  timeout "$limit" "$@" >>"$out/device_log.txt" 2>&1
  local rc=$?
  echo "[$name] rc $rc in $((SECONDS - t0)) s (limit $limit s)" | tee -a "$out/device_log.txt"
}

{
  date -u
  "$py" -c "import jax; print('jax', jax.__version__, jax.default_backend(), jax.devices())"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.memory --format=csv 2>/dev/null || true
} | tee "$out/device_log.txt"

if [[ "$quick" == "--quick" ]]; then
  step planning 120 "$py" benchmarks/bench_planning.py --cases d,bw --no-toolbox --no-mdpsolver \
    --no-quantecon --quick --out-dir "$out"
  step scale 120 "$py" benchmarks/bench_scale.py --quick --no-mdpsolver --name scale_device \
    --out-dir "$out"
  step accelerated 120 "$py" benchmarks/bench_accelerated.py --kinds garnet --quick \
    --out-dir "$out"
  step closed_form 120 "$py" benchmarks/bench_scale.py --closed-form-exp 4 --dim 3 --gamma 0.9 \
    --tol 1e-4 --name scale_device_closed_form --out-dir "$out"
else
  step planning 150 "$py" benchmarks/bench_planning.py --cases d,bw --no-toolbox --no-mdpsolver \
    --no-quantecon --repeats 3 --out-dir "$out"
  step scale 150 "$py" benchmarks/bench_scale.py --max-exp 7 --mf-max-exp 8 --solve-exp 0 \
    --no-mdpsolver --name scale_device --out-dir "$out"
  step accelerated 150 "$py" benchmarks/bench_accelerated.py --kinds garnet --out-dir "$out"
  step closed_form 300 "$py" benchmarks/bench_scale.py --closed-form-exp 8 --dim 3 --gamma 0.9 \
    --tol 1e-4 --name scale_device_closed_form --out-dir "$out"
fi
echo "total $((SECONDS - start)) s" | tee -a "$out/device_log.txt"
# The device tool returns at most 8 files: the JSON results travel as one archive.
(cd "$out" && shopt -s nullglob && js=(*.json) && ((${#js[@]})) && tar czf results_json.tgz "${js[@]}" \
  && rm -f "${js[@]}")
ls -la "$out" | tee -a "$out/device_log.txt"
