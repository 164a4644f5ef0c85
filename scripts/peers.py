"""Builds the peer artifacts the o2 benchmark compares against: ONNX Runtime's
own quantization tools at their best measured settings (see ENGINES facts in
ARCHITECTURE.md), plus ORT's defaults.

usage: peers.py ZOO OUT CALIB_RESNET_NPZ
       peers.py generic MODEL OUT CALIB_NPZ INPUT_NAME   (any ONNX model)
Writes OUT/<model>__<peer>.onnx and prints one line per artifact (or why ORT's
tool failed on it).
"""
import os
import sys
import time

import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quantize_dynamic, quantize_static)
from onnxruntime.quantization.shape_inference import quant_pre_process


class NpzReader(CalibrationDataReader):
    def __init__(self, path, input_name):
        data = np.load(path)
        arr = data[list(data.keys())[0]]
        self.items = iter([{input_name: arr[i:i + 1]} for i in range(arr.shape[0])])

    def get_next(self):
        return next(self.items, None)


def preprocessed(zoo, out):
    path = os.path.join(out, "resnet18_preprocessed.onnx.tmp")
    quant_pre_process(f"{zoo}/resnet18.onnx", path)
    return path


def generic(model, out, calib, input_name):
    """ORT's tools on any one-input model, each at its documented settings."""
    os.makedirs(out, exist_ok=True)
    stem = os.path.splitext(os.path.basename(model))[0]

    def pre():
        path = os.path.join(out, f"{stem}_preprocessed.onnx.tmp")
        try:
            quant_pre_process(model, path)
            return path
        except Exception as e:  # the tool's own failure is a finding, not a crash
            print(f"{stem}__preprocess FAILED: {str(e).splitlines()[0][:200]}", flush=True)
            return model

    jobs = [
        ("ort-static-u8s8-per-channel", lambda p: quantize_static(
            pre(), p, NpzReader(calib, input_name), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)),
        ("ort-static-default", lambda p: quantize_static(pre(), p, NpzReader(calib, input_name))),
        ("ort-dynamic-default", lambda p: quantize_dynamic(model, p, weight_type=QuantType.QInt8)),
    ]
    for name, make in jobs:
        path = os.path.join(out, f"{stem}__{name}.onnx")
        t0 = time.time()
        try:
            make(path)
            print(f"{stem}__{name} {time.time() - t0:.1f}s", flush=True)
        except Exception as e:
            print(f"{stem}__{name} FAILED: {str(e).splitlines()[0][:200]}", flush=True)
            if os.path.exists(path):
                os.remove(path)


def main():
    if sys.argv[1] == "generic":
        generic(*sys.argv[2:6])
        return
    zoo, out, calib = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(out, exist_ok=True)
    jobs = [
        ("minilm__ort-dynamic-per-channel", lambda p: quantize_dynamic(f"{zoo}/minilm.onnx", p, per_channel=True, weight_type=QuantType.QInt8)),
        ("minilm__ort-dynamic-default", lambda p: quantize_dynamic(f"{zoo}/minilm.onnx", p, weight_type=QuantType.QInt8)),
        # ORT's documented recipe: pre-process (shape inference, graph
        # optimization) before static quantization.
        ("resnet18__ort-static-u8s8-per-channel", lambda p: quantize_static(
            preprocessed(zoo, out), p, NpzReader(calib, "input"), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)),
    ]
    for name, make in jobs:
        path = os.path.join(out, name + ".onnx")
        t0 = time.time()
        make(path)
        print(f"{name} {time.time() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
