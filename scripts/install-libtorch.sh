#!/usr/bin/env bash
# Installs the CPU libtorch that the optional `torch` cargo feature (the `tch` crate,
# TorchScript serving for `pytorch_*` processors) builds against and loads at run time.
# The minimal set of PyPI wheels is enough: `torch` itself without its dependencies,
# plus the two CUDA runtime wheels its libraries are linked against (≈1.25 GB).
# Destination: ${WHET_LIBTORCH_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/whetstone/libtorch/<version>}
# Prints the LIBTORCH path (the `torch` folder) on stdout; build with
#   LIBTORCH=<printed path> cargo build --features torch
# and run with LD_LIBRARY_PATH=<printed path>/lib (libtorch sets no rpath).
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
echo "$DEST/torch"
