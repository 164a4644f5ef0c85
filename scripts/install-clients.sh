#!/usr/bin/env bash
# Installs the third-party clients that the end-to-end client tests
# (e2e/tests/clients.rs) drive, unchanged, against `whet serve`: the EAS
# Python SDK (eas-prediction), Triton's HTTP and gRPC clients and perf_analyzer, pinned
# in e2e/clients/requirements.txt, into .clients-venv at the repository root.
# Idempotent: returns at once when the venv matches the pins and runs.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.clients-venv
REQ=e2e/clients/requirements.txt
STAMP="$VENV/.installed-requirements"

# Debian packages this needs, installed when missing (as root; otherwise the
# message says what to install).
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian package $1 ($2): run 'sudo apt-get install $1'" >&2
    exit 1
  fi
  echo "installing $1 ($2)" >&2
  apt-get install -y -qq "$1" >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq "$1" >/dev/null; }
}
# perf_analyzer links libb64.
if ! { /sbin/ldconfig -p 2>/dev/null || ldconfig -p 2>/dev/null; } | grep -q 'libb64\.so\.0d'; then
  apt_install libb64-0d "for perf_analyzer"
fi
# Debian's python3 makes venvs only with python3-venv.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  apt_install python3-venv "for python3 -m venv"
fi

if [ -x "$VENV/bin/python" ] && cmp -s "$REQ" "$STAMP"; then
  exit 0
fi
echo "installing the client test venv into $VENV" >&2
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQ"
# A smoke run: the SDKs import and perf_analyzer finds its libraries.
"$VENV/bin/python" - <<'PY'
import os, subprocess, sys
import eas_prediction, tritonclient.http, tritonclient.grpc, nvidia.cuda_runtime, moto.server, boto3, kubernetes_validate
lib = os.path.join(list(nvidia.cuda_runtime.__path__)[0], "lib")
env = dict(os.environ, LD_LIBRARY_PATH=lib)
exe = os.path.join(os.path.dirname(sys.executable), "perf_analyzer")
out = subprocess.run([exe, "--version"], env=env, capture_output=True, text=True)
if out.returncode != 0:
    sys.exit(f"perf_analyzer does not run: {out.stdout}{out.stderr}")
PY
cp "$REQ" "$STAMP"
