#!/usr/bin/env bash
# Installs the ONNX Runtime shared library that `whet` loads at run time (the `ort`
# crate is built with `load-dynamic`, so nothing is linked at build time).
# The library comes from the PyPI wheel; only the .so is kept.
# Destination: ${WHET_ORT_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/whetstone/onnxruntime}
set -euo pipefail
VERSION="${ORT_VERSION:-1.31.1}"
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
