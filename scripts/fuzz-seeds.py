#!/usr/bin/env python3
"""Writes a few valid inputs per fuzz target into fuzz/seeds/TARGET/, so the
fuzzer starts from real formats: the built-in example's config and model, the
zoo's small data files, the pickle of a torch.save archive, a small frozen
TensorFlow graph (encoded here by hand), a KServe binary request, and EAS SDK
requests. Usage: fuzz-seeds.py EXAMPLE_DIR ZOO_DIR [CLIENTS_PYTHON]"""
import json, os, struct, subprocess, sys, zipfile

example, zoo = sys.argv[1], sys.argv[2]
clients_python = sys.argv[3] if len(sys.argv) > 3 else None
root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz", "seeds")


def put(target, name, data):
    d = os.path.join(root, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


# Config: the example's, and a few variations of its fields.
cfg = json.loads(read(os.path.join(example, "service.json")))
put("config", "example.json", json.dumps(cfg).encode())
cfg["metadata"] = {"instance": 2, "rpc": {"batching": True, "max_batch_size": 8, "max_queue_size": 64}}
cfg["autoscaler"] = {"min": 1, "max": 4, "scaleStrategies": [{"metricName": "qps", "threshold": 10}]}
put("config", "scaled.json", json.dumps(cfg).encode())

# ONNX: the example's model.
for dirpath, _, files in os.walk(example):
    for f in files:
        if f.endswith(".onnx"):
            put("onnx", f, read(os.path.join(dirpath, f)))
        if f.endswith(".npz"):
            put("npz", f, read(os.path.join(dirpath, f)))

# Data files from the zoo (the small ones).
for f, target in [("test_textcnn.npy", "npy"), ("test_textcnn.npz", "npz"), ("ref_textcnn.npz", "npz")]:
    p = os.path.join(zoo, f)
    if os.path.exists(p):
        put(target, f, read(p))
for f in ["test_minilm.pth", "calib_minilm.pth"]:
    p = os.path.join(zoo, f)
    if os.path.exists(p):
        with zipfile.ZipFile(p) as z:
            for n in z.namelist():
                if n.endswith("data.pkl"):
                    put("pickle", f + ".pkl", z.read(n))


# TensorFlow: x (Placeholder, float [-1,4]) -> Relu -> Identity, as a GraphDef.
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 2:
        return key + varint(len(payload)) + payload
    return key + payload


def attr(name, value):  # map<string, AttrValue> entry
    return field(5, 2, field(1, 2, name.encode()) + field(2, 2, value))


dtype_float = field(6, 0, varint(1))  # AttrValue.type = DT_FLOAT
dim = lambda n: field(2, 2, field(1, 0, varint(n & (2**64 - 1))))  # TensorShapeProto.dim.size
shape = field(7, 2, dim(-1) + dim(4))  # AttrValue.shape
node = lambda name, op, inputs, attrs: field(
    1, 2, field(1, 2, name.encode()) + field(2, 2, op.encode()) + b"".join(field(3, 2, i.encode()) for i in inputs) + attrs
)
graph = node("x", "Placeholder", [], attr("dtype", dtype_float) + attr("shape", shape))
graph += node("r", "Relu", ["x"], attr("T", dtype_float))
graph += node("y", "Identity", ["r"], attr("T", dtype_float))
put("tensorflow", "relu.pb", graph)

# KServe binary: two control bytes (header length low byte, flags), then the body.
header = json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                                 "parameters": {"binary_data_size": 16}}]}).encode()
body = header + struct.pack("<4f", 0.1, 0.2, 0.3, 0.4)
put("kserve_binary", "x.bin", bytes([len(header) & 0xFF, len(header) >> 8 & 0x0F]) + body)

# EAS: the SDK's own requests.
if clients_python:
    script = (
        "import sys\n"
        "from eas_prediction import TFRequest, TorchRequest\n"
        "r = TFRequest('serving_default'); r.add_feed('x', [1, 4], TFRequest.DT_FLOAT, [0.1, 0.2, 0.3, 0.4])\n"
        "r.add_feed('ids', [1, 2], TFRequest.DT_INT64, [1, 2]); r.add_fetch('y')\n"
        "open(sys.argv[1], 'wb').write(r.to_string())\n"
        "t = TorchRequest(); t.add_feed(0, [1, 4], TorchRequest.DT_FLOAT, [0.1, 0.2, 0.3, 0.4])\n"
        "open(sys.argv[2], 'wb').write(t.to_string())\n"
    )
    d = os.path.join(root, "eas_protobuf")
    os.makedirs(d, exist_ok=True)
    subprocess.run([clients_python, "-c", script, os.path.join(d, "tf.pb"), os.path.join(d, "torch.pb")], check=True)
