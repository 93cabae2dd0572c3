#!/usr/bin/env bash
# The GPU check of issue 24, one prepared script for a short lease on a CUDA machine:
#   1. the model tests on CUDA (test/test_model.py's device tests, PERSISTENCE_TEST_DEVICE);
#   2. `persistence-ros bench model --device cuda` at 1/8/32/64/256 tracks, float32 and
#      bfloat16 (autocast), for the shipped `cpu` configuration and the `gpu` one;
#   3. a short `train classifier --config gpu` on a small synthetic data set.
# Each step has its own time limit (about 8 minutes in all, at worst); the logs and JSON go
# to $OUT (default /tmp/gpu-check) and a compact summary is printed last.
#
# It uses the machine's python3 and torch and installs nothing from a network: the
# pure-Python packages the model needs beyond that machine's image come as wheels in .whl/
# (scripts/gpu-wheels.sh fetches them here; the device tool carries them: carry [".whl"]).
#
#   scripts/gpu-check.sh          on a GPU machine
#   scripts/gpu-check.sh --cpu    a dry run on the CPU with small sizes (checks the script)
set -u
cd "$(dirname "$0")/.."
REPO=$(pwd)
MODE=cuda
[ "${1:-}" = "--cpu" ] && MODE=cpu
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ "$MODE" = cpu ] && [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
export PYTHONUNBUFFERED=1 ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST OMP_WAIT_POLICY=PASSIVE

if ls .whl/*.whl > /dev/null 2>&1; then
  SITE=/tmp/gpu-check-site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" .whl/*.whl || { echo "gpu-check: cannot install .whl/*.whl" >&2; exit 2; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c 'import torch, numpy, einops, safetensors, yaml, cv2, scipy, tqdm, pytest
import vector_quantize_pytorch' > "$OUT/imports.log" 2>&1; then
  tail -3 "$OUT/imports.log" >&2
  echo "gpu-check: a package is missing; run scripts/gpu-wheels.sh on a machine with PyPI" \
       "access and carry .whl" >&2
  exit 2
fi
"$PY" - > "$OUT/machine.txt" 2>&1 <<'EOF'
import platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'
print(f'python {platform.python_version()}, torch {torch.__version__}, '
      f'cuda {torch.version.cuda}, gpu {gpu}')
EOF
cat "$OUT/machine.txt"
if [ "$MODE" = cuda ] && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  echo "gpu-check: torch sees no CUDA device (use --cpu for a dry run)" >&2
  exit 2
fi

STATUS=0
SUMMARY=()
step() {  # step NAME LIMIT_S COMMAND...: run with a time limit, log to $OUT/NAME.log
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s)
  timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || STATUS=1
  local verdict=ok
  [ $rc -eq 124 ] && verdict="TIMED OUT (${limit} s)"
  [ $rc -ne 0 ] && [ $rc -ne 124 ] && verdict="FAILED (exit $rc)"
  SUMMARY+=("$(printf '%-22s %-24s %4d s' "$name" "$verdict" $(( $(date +%s) - start )))")
  echo "[$(date +%T)] $name: $verdict"
}

if [ "$MODE" = cuda ]; then
  TRACKS=1,8,32,64,256 FRAMES=40 TEST_LIMIT=150 BENCH_LIMIT=90 TRAIN_LIMIT=120
else
  TRACKS=1,8 FRAMES=3 TEST_LIMIT=600 BENCH_LIMIT=300 TRAIN_LIMIT=300
fi

# 1. the model's device tests (streaming = full forward, rollout, pool, bf16 autocast)
step model-tests $TEST_LIMIT env PERSISTENCE_TEST_DEVICE=$MODE "$PY" -m pytest -q \
  -p no:cacheprovider test/test_model.py \
  -k "streaming_equals or extend_in_chunks or streamed_rollout or matches_batched or state_pool or bfloat16"

# 2. streaming latency, float32 and bfloat16, both configurations
for config in cpu gpu; do
  for dtype in float32 bfloat16; do
    step "bench-$config-$dtype" $BENCH_LIMIT "$PY" -m persistence_ros bench model \
      --config $config --device $MODE --dtype $dtype --tracks $TRACKS --frames $FRAMES \
      --json "$OUT/bench-$config-$dtype.json"
  done
done

# 3. a short training run of the gpu configuration on a synthetic data set
if [ "$MODE" = cuda ]; then
  TRAIN_ARGS=(--max-steps 30)
  DATA_ARGS="tracks_per_scene=48, max_frames=64"
else
  TRAIN_ARGS=(--max-steps 1 --set train.batch_size=2 --set train.window=4
              --set classifier.window=4)
  DATA_ARGS="tracks_per_scene=4, max_frames=6"
fi
rm -rf "$OUT/data" "$OUT/train"
step train-gpu $TRAIN_LIMIT bash -c "\"$PY\" -c 'from persistence_ros.model.testing import make_synthetic_dataset as m; m(\"$OUT/data\", $DATA_ARGS)' && \"$PY\" -m persistence_ros train classifier --config gpu --data \"$OUT/data\" --out \"$OUT/train\" --device $MODE --epochs 1 --no-progress ${TRAIN_ARGS[*]}"

echo
echo "== gpu-check summary ($MODE; $(cat "$OUT/machine.txt"); logs in $OUT)"
printf '%s\n' "${SUMMARY[@]}"
grep -E "passed|failed|error" "$OUT/model-tests.log" | tail -1
"$PY" - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = []
for path in sorted(out.glob('bench-*.json')):
    model = json.loads(path.read_text())['model']
    for n, row in model['tracks'].items():
        rows.append((model['config'], model.get('dtype', 'float32'), int(n),
                     row['step']['median_ms'], row['step']['p99_ms'],
                     row['streamer']['median_ms']))
if rows:
    print('config dtype     tracks  step median ms  step p99 ms  streamer median ms')
    for r in rows:
        print(f'{r[0]:6s} {r[1]:9s} {r[2]:6d} {r[3]:15.2f} {r[4]:12.2f} {r[5]:19.2f}')
    target = [r for r in rows if r[2] == 64]
    for r in target:
        print(f'target (64 tracks, step p99 <= 8 ms), {r[0]} {r[1]}: '
              f'{"met" if r[4] <= 8.0 else "missed"} ({r[4]:.2f} ms)')
metrics = out / 'train' / 'metrics.jsonl'
if metrics.is_file() and metrics.read_text().strip():
    last = json.loads(metrics.read_text().splitlines()[-1])
    print('train-gpu: ' + ', '.join(f'{k} {last[k]:.4g}' if isinstance(last[k], float)
                                    else f'{k} {last[k]}'
                                    for k in ('epoch', 'step', 'train_loss', 'val_loss',
                                              'val_track_f1') if k in last))
else:
    print('train-gpu: no metrics written')
EOF
exit $STATUS
