"""Triton's Python HTTP client (tritonclient[http]) against `whet serve`'s
KServe v2 endpoints, unchanged, with the service token as a header: server
and model metadata, readiness, model config, and inference with JSON
tensors, binary tensors (the binary_tensor_data extension), binary outputs
for JSON inputs, a gzip-compressed request and the versioned route. Every
answer must match the fp32 references."""

import numpy as np
import tritonclient.http as httpclient

from common import INPUTS, OUTPUT, Zoo, args, check, expect_error, host_port


def main():
    a = args(__doc__)
    zoo = Zoo(a.zoo)
    auth = {"Authorization": f"Bearer {a.token}"}
    c = httpclient.InferenceServerClient(url=host_port(a.url), network_timeout=120.0)

    assert c.is_server_live(), "server not live"
    assert c.is_server_ready(), "server not ready"
    meta = c.get_server_metadata()
    assert "binary_tensor_data" in meta["extensions"], meta
    print(f"server metadata: {meta}")
    assert c.is_model_ready(a.service, headers=auth), "model not ready"
    model = c.get_model_metadata(a.service, headers=auth)
    assert [t["name"] for t in model["inputs"]] == list(INPUTS), model
    assert [t["datatype"] for t in model["inputs"]] == ["INT64"] * 3, model
    assert model["outputs"][0]["name"] == OUTPUT, model
    config = c.get_model_config(a.service, headers=auth)
    assert config["max_batch_size"] == 0 and config["input"][0]["data_type"] == "TYPE_INT64", config
    print(f"model metadata: inputs {[(t['name'], t['shape']) for t in model['inputs']]}")

    def infer(x, binary_in, outputs, **kw):
        inputs = []
        for n in INPUTS:
            t = httpclient.InferInput(n, [1, 128], "INT64")
            t.set_data_from_numpy(x[n], binary_data=binary_in)
            inputs.append(t)
        # A fresh dict: the client adds Inference-Header-Content-Length to the
        # one it is given, which would then ride along on the next request.
        r = c.infer(a.service, inputs, outputs=outputs, headers=dict(auth), **kw)
        got = r.as_numpy(OUTPUT)
        assert got is not None and got.shape == (1, 128, 384) and got.dtype == np.float32, got
        return got

    for i in range(a.samples):
        x = zoo.sample(i)
        json_out = [httpclient.InferRequestedOutput(OUTPUT, binary_data=False)]
        check("JSON tensors", i, infer(x, False, json_out), zoo.reference)
        check("binary tensors (binary_data=True)", i, infer(x, True, None), zoo.reference)
        raw_out = [httpclient.InferRequestedOutput(OUTPUT, binary_data=True)]
        check("JSON inputs, binary output", i, infer(x, False, raw_out), zoo.reference)

    x = zoo.sample(0)
    check("gzip-compressed binary request", 0,
          infer(x, True, None, request_compression_algorithm="gzip"), zoo.reference)
    check("versioned route", 0, infer(x, True, None, model_version="1"), zoo.reference)

    bad_auth = {"Authorization": "Bearer not-the-token"}
    expect_error("a wrong token", lambda: c.get_model_metadata(a.service, headers=bad_auth),
                 contains=["missing or wrong token"])
    expect_error("an unknown version", lambda: infer(x, True, None, model_version="2"),
                 contains=["version"])
    c.close()
    print("tritonclient[http]: all requests answered correctly")


if __name__ == "__main__":
    main()
