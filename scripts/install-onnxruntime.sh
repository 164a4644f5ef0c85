#!/usr/bin/env bash
# Installs the ONNX Runtime shared library that `whet` loads at run time (the `ort`
# crate is built with `load-dynamic`, so nothing is linked at build time).
# The library comes from the PyPI wheel; only the .so is kept.
# Destination: ${WHET_ORT_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/whetstone/onnxruntime}
#
# --gpu: installs the GPU build instead (the `onnxruntime-gpu` wheel: the same
# library plus the CUDA and TensorRT execution providers, with the CUDA 13 and
# cuDNN 9 runtime wheels it needs) into
# ${WHET_ORT_GPU_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/whetstone/onnxruntime-gpu},
# and writes env.sh there: source it before `whet serve` so that GPU groups
# serve on CUDA. Needs an NVIDIA driver at run time; several GB; not run by CI.
# --gpu --tensorrt: also TensorRT 10's libraries (the `tensorrt-cu13-libs`
# wheel), which the TensorRT execution provider loads; env.sh puts them on
# the library path.
set -euo pipefail
VERSION="${ORT_VERSION:-1.31.1}"
if [ "${1:-}" = "--gpu" ]; then
  GPU_DEST="${WHET_ORT_GPU_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/whetstone/onnxruntime-gpu}"
  if [ ! -f "$GPU_DEST/onnxruntime/capi/libonnxruntime.so.$VERSION" ]; then
    echo "installing ONNX Runtime GPU $VERSION (CUDA 13, cuDNN 9) into $GPU_DEST" >&2
    # The wheel layout is kept: the CUDA provider finds the nvidia-* libraries
    # next to it in the same folder tree.
    python3 -m pip install --quiet --only-binary=:all: --target "$GPU_DEST" \
      "onnxruntime-gpu[cuda,cudnn]==$VERSION"
  fi
  if [ "${2:-}" = "--tensorrt" ] && [ ! -d "$GPU_DEST/tensorrt_libs" ]; then
    echo "installing TensorRT 10 (CUDA 13) into $GPU_DEST" >&2
    python3 -m pip install --quiet --only-binary=:all: --target "$GPU_DEST" --upgrade \
      "tensorrt-cu13-libs>=10.13,<11"
  fi
  libs="$(find "$GPU_DEST/nvidia" -mindepth 2 -maxdepth 2 -type d -name lib 2>/dev/null | sort | paste -sd: -)"
  if [ -d "$GPU_DEST/tensorrt_libs" ]; then
    libs="$GPU_DEST/tensorrt_libs${libs:+:$libs}"
  fi
  {
    echo "export WHET_ORT_LIB=\"$GPU_DEST/onnxruntime/capi/libonnxruntime.so.$VERSION\""
    echo "export LD_LIBRARY_PATH=\"$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\""
  } > "$GPU_DEST/env.sh"
  echo "GPU build installed; before 'whet serve': source $GPU_DEST/env.sh" >&2
  exit 0
fi
DEST="${WHET_ORT_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/whetstone/onnxruntime}"
if [ -f "$DEST/libonnxruntime.so.$VERSION" ]; then
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "installing ONNX Runtime $VERSION into $DEST" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "onnxruntime==$VERSION"
wheel="$(ls "$tmp"/onnxruntime-*.whl)"
python3 - "$wheel" "$tmp/x" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in z.namelist():
        if n.startswith("onnxruntime/capi/libonnxruntime.so"):
            z.extract(n, sys.argv[2])
PY
mkdir -p "$DEST"
cp "$tmp"/x/onnxruntime/capi/libonnxruntime.so* "$DEST/"
ls "$DEST" >&2
