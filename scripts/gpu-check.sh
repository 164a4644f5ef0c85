#!/usr/bin/env bash
# The GPU check. On a machine with an NVIDIA GPU: installs ONNX Runtime's GPU
# build and TensorRT's libraries (PyPI wheels), builds `whet`, starts the real
# server with one GPU resource group on cuda:0, deploys MiniLM and ResNet18 from
# the zoo at o1 and at o2 (the seed's GPU plugin, test data and calibration set)
# and prints one table: every candidate's latency, speedup over ONNX Runtime's
# default session on the same GPU, and accuracy, with what was rejected and why.
#
#   scripts/gpu-check.sh            # WHETSTONE_ZOO: the zoo (default ../shared/zoo)
#
# Each deploy gets what is left of GPU_CHECK_SECONDS (default 480 s, counted from
# the start, installs and build included); one that runs out is a row that says
# so, and the table is printed with what finished. Exits 2 on a machine without
# an NVIDIA driver, 1 when a deploy failed.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
budget="${GPU_CHECK_SECONDS:-480}"
ZOO="${WHETSTONE_ZOO:-../shared/zoo}"

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no NVIDIA driver on this machine (nvidia-smi fails): nothing to check" >&2
  exit 2
fi
for f in minilm.onnx test_minilm.npz calib_minilm.npz resnet18.onnx test_resnet.npz calib_resnet.pth; do
  if [ ! -f "$ZOO/$f" ]; then
    echo "gpu-check: $ZOO/$f is missing (set WHETSTONE_ZOO to the zoo folder)" >&2
    exit 1
  fi
done
gpu_name="$(nvidia-smi --query-gpu=name --format=csv,noheader -i 0 | head -n1)"
# The resource group's GPU model: the word of the driver's name with a digit
# in it ("NVIDIA H200" -> H200, "Tesla T4" -> T4).
gpu_word="$(tr ' ' '\n' <<<"$gpu_name" | grep '[0-9]' | head -n1 | tr -cd 'A-Za-z0-9')"
echo "gpu-check: $gpu_name (group GPU=gpu:$gpu_word:1), driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader -i 0 | head -n1)" >&2

scripts/install-onnxruntime.sh --gpu --tensorrt
GPU_DEST="${WHET_ORT_GPU_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/whetstone/onnxruntime-gpu}"
# shellcheck disable=SC1091
. "$GPU_DEST/env.sh"
cargo build --locked --release -p whetstone-backend --bin whet
cargo build --locked --release -p whetstone-runner --bin whet-runner
WHET="$PWD/target/release/whet"

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
"$WHET" serve --addr 127.0.0.1:0 --data "$work/data" \
  --resource-group default=cpu --resource-group "GPU=gpu:$gpu_word:1" \
  >"$work/serve.out" 2>"$work/serve.log" &
server_pid=$!
# Its first line names the address it listens on.
for _ in $(seq 1 100); do
  if grep -q 'http://' "$work/serve.out" 2>/dev/null; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "gpu-check: the server did not start:" >&2
    tail -n 20 "$work/serve.log" >&2
    exit 1
  fi
  sleep 0.2
done
addr="$(grep -o 'http://[^ ]*' "$work/serve.out" | head -n1)"
if [ -z "$addr" ]; then
  echo "gpu-check: the server named no address in 20 s" >&2
  exit 1
fi
export WHET_SERVER="$addr"
export WHET_DATA="$work/data"
echo "gpu-check: server at $WHET_SERVER" >&2

# deploy NAME MODEL_FILE LEVEL TEST CALIB SHAPES
deploy() {
  local name="$1" model="$2" level="$3" test="$4" calib="$5" shapes="$6"
  local dir="$work/$name"
  mkdir -p "$dir"
  cp "$ZOO/$model" "$ZOO/$test" "$ZOO/$calib" "$dir/"
  cat >"$work/$name.json" <<EOF
{
  "name": "$name",
  "model_path": "$dir",
  "processor": "onnx_gpu",
  "resource": "GPU",
  "metadata": {"instance": 1, "gpu": 1},
  "plugins": [{
    "command": "blade --mode eas_plugin --optimize_for gpu",
    "image": "registry.cn-shanghai.aliyuncs.com/eas/pai-blade-deploy:cu110_latest",
    "resource": "GPU",
    "gpu": 1,
    "config": {"model_info": {"$model": {
      "optimization_level": "$level",
      "test_data": "$test",
      "calibration_dataset": "$calib",
      "input_shapes": $shapes
    }}}
  }]
}
EOF
  local left=$((budget - (SECONDS - start)))
  if [ "$left" -le 10 ]; then
    echo "$name: not deployed, the ${budget} s budget was spent" >>"$work/failed"
    return
  fi
  echo "gpu-check: deploying $name ($left s left)" >&2
  if ! timeout "$left" "$WHET" create "$work/$name.json" >"$work/$name.log" 2>&1; then
    echo "$name: deploy failed or timed out: $(tail -n 3 "$work/$name.log" | tr '\n' ' ')" >>"$work/failed"
  fi
}

deploy minilm_o1 minilm.onnx o1 test_minilm.npz calib_minilm.npz '[["1x128"], ["8x128"]]'
deploy resnet18_o1 resnet18.onnx o1 test_resnet.npz calib_resnet.pth '[["1x3x224x224"], ["8x3x224x224"]]'
deploy minilm_o2 minilm.onnx o2 test_minilm.npz calib_minilm.npz '[["1x128"], ["8x128"]]'
deploy resnet18_o2 resnet18.onnx o2 test_resnet.npz calib_resnet.pth '[["1x3x224x224"], ["8x3x224x224"]]'

python3 - "$WHET_SERVER" "$work/data/admin-token" "$gpu_name" <<'EOF'
import json, sys, urllib.request
server, token_file, gpu = sys.argv[1], sys.argv[2], sys.argv[3]
token = open(token_file).read().strip()
print(f"\nGPU check on {gpu}: p50 per shape group (batch 1 / batch 8), speedup over "
      "ONNX Runtime's default session on the same GPU\n")
print("| model | level | candidate | status | p50 ms | speedup | accuracy | note |")
print("|---|---|---|---|---|---|---|---|")
for name in ["minilm_o1", "resnet18_o1", "minilm_o2", "resnet18_o2"]:
    model, level = name.rsplit("_", 1)
    req = urllib.request.Request(f"{server}/api/v2/services/{name}",
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        detail = json.load(urllib.request.urlopen(req, timeout=30))
    except Exception as e:
        print(f"| {model} | {level} | - | not deployed | - | - | - | {e} |")
        continue
    report = detail.get("report")
    if not report:
        print(f"| {model} | {level} | - | {detail.get('status', '?')} | - | - | - | no report |")
        continue
    for c in report["candidates"]:
        p50 = " / ".join(f"{l['p50_ms']:.3f}" for l in c.get("latency", [])) or "-"
        speed = f"{c['speedup']:.2f}x" if c.get("speedup") else "-"
        acc = []
        if c.get("min_cosine") is not None:
            acc.append(f"cos {c['min_cosine']:.4f}")
        if c.get("top1") is not None:
            acc.append(f"top1 {c['top1']:.3f}")
        if c.get("max_rel_error") is not None:
            acc.append(f"rel {c['max_rel_error']:.1e}")
        note = (c.get("message") or "")[:120].replace("|", "/").replace("\n", " ")
        print(f"| {model} | {level} | {c['name']} | {c['status']} | {p50} | {speed} | {', '.join(acc) or '-'} | {note} |")
EOF
if [ -f "$work/failed" ]; then
  echo >&2
  cat "$work/failed" >&2
  exit 1
fi
