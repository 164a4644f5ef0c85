"""Triton's perf_analyzer against `whet serve`'s KServe v2 endpoint, as it
is (binary tensors, the service token as an HTTP header), at concurrency 1
to 16 with short count windows. The test sentences are the input data.
perf_analyzer must finish with exit status 0, report every concurrency
level, and see no failed request."""

import csv
import json
import os
import subprocess
import sys
import tempfile

import nvidia.cuda_runtime

from common import INPUTS, Zoo, args, host_port

CONCURRENCY = [1, 6, 11, 16]


def main():
    a = args(__doc__)
    zoo = Zoo(a.zoo)
    work = tempfile.mkdtemp(prefix="perf-analyzer-")
    data = os.path.join(work, "input.json")
    with open(data, "w") as f:
        json.dump({"data": [
            {n: {"content": zoo.inputs[n][i].tolist(), "shape": [1, 128]} for n in INPUTS}
            for i in range(len(zoo.reference))
        ]}, f)
    report = os.path.join(work, "report.csv")
    exe = os.path.join(os.path.dirname(sys.executable), "perf_analyzer")
    # The binary links libcudart (from nvidia-cuda-runtime-cu12); without a GPU
    # it is loaded and never used.
    lib = os.path.join(list(nvidia.cuda_runtime.__path__)[0], "lib")
    env = dict(os.environ, LD_LIBRARY_PATH=lib)
    cmd = [
        exe, "-m", a.service, "-u", host_port(a.url), "-i", "http",
        "-H", f"Authorization: Bearer {a.token}",
        "--input-data", data,
        "--concurrency-range", f"{CONCURRENCY[0]}:{CONCURRENCY[-1]}:{CONCURRENCY[1] - CONCURRENCY[0]}",
        "--measurement-mode", "count_windows", "--measurement-request-count", "24",
        # Stability is not what is tested here, and a loaded 2-core machine
        # would otherwise need many more windows.
        "--stability-percentage", "999", "--max-trials", "5",
        "-f", report,
    ]
    print("$ " + " ".join(cmd), flush=True)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    print(out.stdout)
    print(out.stderr, file=sys.stderr)
    if out.returncode != 0:
        sys.exit(f"perf_analyzer exited with status {out.returncode}")
    text = (out.stdout + out.stderr).lower()
    for bad in ("error", "failed"):
        if bad in text:
            sys.exit(f"perf_analyzer reported '{bad}'")
    with open(report) as f:
        rows = list(csv.DictReader(f))
    # The report lists the levels by throughput, not in the order measured.
    rows.sort(key=lambda r: int(r["Concurrency"]))
    levels = [int(r["Concurrency"]) for r in rows]
    if levels != CONCURRENCY:
        sys.exit(f"perf_analyzer measured concurrency {levels}, expected {CONCURRENCY}")
    for r in rows:
        if not float(r["Inferences/Second"]) > 0:
            sys.exit(f"no throughput at concurrency {r['Concurrency']}: {r}")
        print(f"concurrency {r['Concurrency']}: {float(r['Inferences/Second']):.1f} infer/s, "
              f"p50 {int(r['p50 latency']) / 1000:.1f} ms")
    print("perf_analyzer: all concurrency levels measured, no errors")


if __name__ == "__main__":
    main()
