"""Triton's Python gRPC client (tritonclient[grpc]) against `whet serve
--grpc-addr`, unchanged, with the service token as `authorization`
metadata: liveness, readiness, server and model metadata, model config,
inference (raw tensors, as the client sends them; a gzip-compressed
request; the versioned form; the streaming method), each answer against
the fp32 references; and the status codes of a wrong token, a wrong shape,
an unknown version and an unknown output."""

import queue

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from common import INPUTS, OUTPUT, Zoo, args, check, expect_error, host_port


def main():
    a = args(__doc__)
    if not a.grpc:
        raise SystemExit("--grpc HOST:PORT is required")
    zoo = Zoo(a.zoo)
    auth = {"authorization": f"Bearer {a.token}"}
    c = grpcclient.InferenceServerClient(url=a.grpc)

    assert c.is_server_live(), "server not live"
    assert c.is_server_ready(), "server not ready"
    meta = c.get_server_metadata(as_json=True)
    print(f"server metadata: {meta}")
    assert c.is_model_ready(a.service, headers=auth), "model not ready"
    model = c.get_model_metadata(a.service, headers=auth, as_json=True)
    assert [t["name"] for t in model["inputs"]] == list(INPUTS), model
    assert [t["datatype"] for t in model["inputs"]] == ["INT64"] * 3, model
    assert model["outputs"][0]["name"] == OUTPUT and model["versions"] == ["1"], model
    config = c.get_model_config(a.service, headers=auth, as_json=True)["config"]
    assert config["input"][0]["data_type"] == "TYPE_INT64", config
    assert config.get("max_batch_size", 0) == 0, config
    print(f"model metadata: inputs {[(t['name'], t['shape']) for t in model['inputs']]}")

    def inputs_of(x, shape=(1, 128)):
        out = []
        for n in INPUTS:
            t = grpcclient.InferInput(n, list(shape), "INT64")
            t.set_data_from_numpy(np.ascontiguousarray(x[n].reshape(shape)))
            out.append(t)
        return out

    def infer(x, **kw):
        r = c.infer(a.service, inputs_of(x), headers=auth, **kw)
        got = r.as_numpy(OUTPUT)
        assert got is not None and got.shape == (1, 128, 384) and got.dtype == np.float32, got
        return got

    for i in range(a.samples):
        check("raw tensors", i, infer(zoo.sample(i), request_id=f"r{i}"), zoo.reference)
    x = zoo.sample(0)
    check("gzip-compressed request", 0, infer(x, compression_algorithm="gzip"), zoo.reference)
    check("versioned request", 0, infer(x, model_version="1"), zoo.reference)
    out = [grpcclient.InferRequestedOutput(OUTPUT)]
    check("requested output", 0, infer(x, outputs=out), zoo.reference)

    # The streaming method: every request answered on the stream, by id.
    answers = queue.Queue()
    c.start_stream(callback=lambda result, error: answers.put((result, error)), headers=auth)
    for i in range(a.samples):
        c.async_stream_infer(a.service, inputs_of(zoo.sample(i)), request_id=str(i))
    got = {}
    for _ in range(a.samples):
        result, error = answers.get(timeout=120)
        if error is not None:
            raise AssertionError(f"stream: {error}")
        got[int(result.get_response().id)] = result.as_numpy(OUTPUT)
    c.stop_stream()
    for i in range(a.samples):
        check("streamed", i, got[i], zoo.reference)

    bad = {"authorization": "Bearer not-the-token"}
    expect_error("a wrong token", lambda: c.infer(a.service, inputs_of(x), headers=bad),
                 status="StatusCode.UNAUTHENTICATED", contains=["missing or wrong token"])
    expect_error("a wrong token (metadata)", lambda: c.get_model_metadata(a.service, headers=bad),
                 status="StatusCode.UNAUTHENTICATED")
    expect_error("a wrong shape",
                 lambda: c.infer(a.service, inputs_of(x, (1, 1, 128)), headers=auth),
                 status="StatusCode.INVALID_ARGUMENT",
                 contains=["input_ids", "expected shape [", "got [1,1,128]"])
    expect_error("an unknown version", lambda: infer(x, model_version="2"),
                 status="StatusCode.NOT_FOUND", contains=["version"])
    expect_error("an unknown output",
                 lambda: infer(x, outputs=[grpcclient.InferRequestedOutput("nope")]),
                 status="StatusCode.INVALID_ARGUMENT", contains=["'nope'"])
    c.close()
    print("tritonclient[grpc]: all requests answered correctly")


if __name__ == "__main__":
    try:
        main()
    except InferenceServerException as e:
        raise SystemExit(f"unexpected error: {e.status()} {e}")
