#!/usr/bin/env bash
# Installs the CPU libtorch that the optional `torch` cargo feature (the `tch` crate,
# TorchScript serving for `pytorch_*` processors) builds against and loads at run time.
# The minimal set of PyPI wheels is enough: `torch` itself without its dependencies,
# plus the two CUDA runtime wheels its libraries are linked against (≈1.25 GB).
# Destination: ${WHET_LIBTORCH_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/whetstone/libtorch/<version>}
# Prints the LIBTORCH path (the `torch` folder) on stdout; build with
#   LIBTORCH=<printed path> cargo build --features torch
# and run with LD_LIBRARY_PATH=<printed path>/lib (libtorch sets no rpath).
#
# --gpu: also installs the CUDA 13 libraries libtorch's CUDA backend
# (libtorch_cuda.so) needs — cuBLAS, cuDNN, cuFFT, cuSPARSE(Lt), NCCL, NVSHMEM, … as
# the torch wheel's own requirements name them — into <destination>-cuda (several
# GB), and writes env.sh there: `source` it before `whet serve` so that
# `pytorch_gpu_*` services run on CUDA. whet loads libtorch_cuda.so at run time,
# so the same binary serves CPU-only without them. Needs an NVIDIA driver at run
# time; not run by CI.
set -euo pipefail
VERSION="${TORCH_VERSION:-2.13.0}"
DEST="${WHET_LIBTORCH_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/whetstone/libtorch/$VERSION}"
if [ ! -f "$DEST/.complete" ]; then
  echo "installing libtorch $VERSION (CPU) into $DEST" >&2
  # --no-deps: the full dependency set (CUDA libraries, sympy, ...) is several GB and
  # not needed to run TorchScript on the CPU.
  python3 -m pip install --quiet --no-deps --only-binary=:all: --target "$DEST" \
    "torch==$VERSION" nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  # Marks a finished install so that an interrupted one is redone.
  touch "$DEST/.complete"
fi
if [ "${1:-}" = "--gpu" ]; then
  CUDA_DEST="$DEST-cuda"
  if [ ! -f "$CUDA_DEST/.complete" ]; then
    # The CUDA requirements of this very torch wheel (Linux markers dropped).
    mapfile -t reqs < <(sed -n 's/^Requires-Dist: \(\(cuda-toolkit\|nvidia-\)[^;]*\).*platform_system == "Linux".*/\1/p' \
      "$DEST/torch-$VERSION.dist-info/METADATA" | tr -d ' ')
    [ "${#reqs[@]}" -gt 0 ] || { echo "no CUDA requirements found in torch $VERSION's metadata" >&2; exit 1; }
    echo "installing libtorch's CUDA libraries (${reqs[*]}) into $CUDA_DEST" >&2
    python3 -m pip install --quiet --only-binary=:all: --target "$CUDA_DEST" "${reqs[@]}"
    touch "$CUDA_DEST/.complete"
  fi
  libs="$(find "$CUDA_DEST/nvidia" -mindepth 2 -maxdepth 3 -type d -name lib 2>/dev/null | sort | paste -sd: -)"
  echo "export LD_LIBRARY_PATH=\"$DEST/torch/lib:$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}\"" > "$CUDA_DEST/env.sh"
  echo "libtorch CUDA libraries installed; before 'whet serve': source $CUDA_DEST/env.sh" >&2
fi
echo "$DEST/torch"
