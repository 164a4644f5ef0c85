"""Triton's perf_analyzer against `whet serve`'s KServe v2 endpoints, as it
is: over HTTP (binary tensors, the service token as a header) at
concurrency 1 to 16, then over gRPC (`-i grpc`, its default protocol, the
token as metadata) at concurrency 1, 8 and 16 and gzip-compressed at 8,
with short count windows.
The test sentences are the input data. Every run must finish with exit
status 0, report its concurrency levels, and see no failed request."""

import csv
import json
import os
import subprocess
import sys
import tempfile

import nvidia.cuda_runtime

from common import INPUTS, Zoo, args, host_port

HTTP_CONCURRENCY = [1, 6, 11, 16]
GRPC_CONCURRENCY = [1, 8, 16]


def main():
    a = args(__doc__)
    zoo = Zoo(a.zoo)
    if not a.grpc:
        raise SystemExit("--grpc HOST:PORT is required")
    work = tempfile.mkdtemp(prefix="perf-analyzer-")
    data = os.path.join(work, "input.json")
    with open(data, "w") as f:
        json.dump({"data": [
            {n: {"content": zoo.inputs[n][i].tolist(), "shape": [1, 128]} for n in INPUTS}
            for i in range(len(zoo.reference))
        ]}, f)
    levels = HTTP_CONCURRENCY
    step = levels[1] - levels[0]
    run(a, work, data, "http", host_port(a.url), f"{levels[0]}:{levels[-1]}:{step}", levels)
    # 1, 8 and 16 are no arithmetic range: one run each.
    for level in GRPC_CONCURRENCY:
        run(a, work, data, "grpc", a.grpc, f"{level}:{level}", [level])
    # gzip-compressed requests, several at once: each holds only what it
    # may inflate to of the server's body budget.
    run(a, work, data, "grpc", a.grpc, "8:8", [8], ["--grpc-compression-algorithm", "gzip"])
    print("perf_analyzer: every protocol and concurrency level measured, no errors")


def run(a, work, data, protocol, url, levels_arg, levels_expected, extra=()):
    options = "".join("-" + x.lstrip("-") for x in extra)
    report = os.path.join(work, f"report-{protocol}-{levels_arg.replace(':', '_')}{options}.csv")
    exe = os.path.join(os.path.dirname(sys.executable), "perf_analyzer")
    # The binary links libcudart (from nvidia-cuda-runtime-cu12); without a GPU
    # it is loaded and never used.
    lib = os.path.join(list(nvidia.cuda_runtime.__path__)[0], "lib")
    env = dict(os.environ, LD_LIBRARY_PATH=lib)
    cmd = [
        exe, "-m", a.service, "-u", url, "-i", protocol,
        # gRPC metadata keys are lowercase (the gRPC library aborts on
        # others); HTTP takes any case.
        "-H", f"authorization: Bearer {a.token}",
        "--input-data", data,
        "--concurrency-range", levels_arg,
        "--measurement-mode", "count_windows", "--measurement-request-count", "24",
        # Stability is not what is tested here, and a loaded 2-core machine
        # would otherwise need many more windows.
        "--stability-percentage", "999", "--max-trials", "5",
        "-f", report,
        *extra,
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
    if levels != levels_expected:
        sys.exit(f"perf_analyzer ({protocol}) measured concurrency {levels}, expected {levels_expected}")
    for r in rows:
        if not float(r["Inferences/Second"]) > 0:
            sys.exit(f"no throughput at concurrency {r['Concurrency']} ({protocol}): {r}")
        print(f"{protocol}, concurrency {r['Concurrency']}: {float(r['Inferences/Second']):.1f} infer/s, "
              f"p50 {int(r['p50 latency']) / 1000:.1f} ms")


if __name__ == "__main__":
    main()
