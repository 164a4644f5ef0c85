"""The official EAS Python SDK (eas-prediction), used exactly as its
documentation shows, against `whet serve`: PredictClient with the service
token (which makes it sign each request: `Authorization: EAS ...` with
Content-MD5 and Date), sending a StringRequest (KServe v2 JSON), a TFRequest,
and TorchRequests addressing inputs by index and, snappy-compressed, by name.
Every answer must match the fp32 references."""

import json
import os
import time

from eas_prediction import PredictClient, StringRequest, TFRequest, TorchRequest

from common import INPUTS, OUTPUT, Zoo, args, check, expect_error, host_port


def client(a, token):
    c = PredictClient(host_port(a.url), a.service)
    c.set_token(token)
    c.set_timeout(60000)
    c.set_retry_count(1)
    c.init()
    return c


def set_local_zone(tz):
    """The SDK stamps Date with the *local* time labelled GMT: a client in
    another zone sends a Date off by its UTC offset."""
    os.environ["TZ"] = tz
    time.tzset()


def main():
    a = args(__doc__)
    zoo = Zoo(a.zoo)
    c = client(a, a.token)

    # With a token the SDK uses the signed form, not the raw token.
    headers = c.generate_singaure(bytearray(b"{}"))
    assert headers["Authorization"].startswith("EAS "), headers
    assert "Content-MD5" in headers and "Date" in headers, headers
    print(f"the SDK signs: Authorization {headers['Authorization'][:8]}..., Date {headers['Date']!r}")

    for i in range(a.samples):
        x = zoo.sample(i)

        body = {
            "inputs": [
                {"name": n, "shape": [1, 128], "datatype": "INT64", "data": x[n].ravel().tolist()}
                for n in INPUTS
            ]
        }
        resp = c.predict(StringRequest(json.dumps(body)))
        out = json.loads(resp.response_data)["outputs"][0]
        assert out["name"] == OUTPUT and out["shape"] == [1, 128, 384], out["shape"]
        check("StringRequest (KServe v2 JSON)", i, out["data"], zoo.reference)

        req = TFRequest("serving_default")
        for n in INPUTS:
            req.add_feed(n, [1, 128], TFRequest.DT_INT64, x[n].ravel().tolist())
        req.add_fetch(OUTPUT)
        resp = c.predict(req)
        assert resp.get_tensor_shape(OUTPUT) == [1, 128, 384], resp.get_tensor_shape(OUTPUT)
        check("TFRequest", i, resp.get_values(OUTPUT), zoo.reference)

        # Inputs by index: 0, 1, 2 are the model's inputs in signature order.
        req = TorchRequest()
        for k, n in enumerate(INPUTS):
            req.add_feed(k, [1, 128], TorchRequest.DT_INT64, x[n].ravel().tolist())
        resp = c.predict(req)
        assert resp.get_tensor_shape(0) == [1, 128, 384], resp.get_tensor_shape(0)
        check("TorchRequest by index", i, resp.get_values(0), zoo.reference)

        # By name, snappy-compressed, with an output filter.
        req = TorchRequest(True)
        for n in INPUTS:
            req.add_feed_map(n, [1, 128], TorchRequest.DT_INT64, x[n].ravel().tolist())
        req.add_fetch(0)
        resp = c.predict(req)
        check("TorchRequest by name, snappy", i, resp.get_values_map(OUTPUT), zoo.reference)

    # The SDK's clock quirk: a client at UTC+14 sends a Date 14 h ahead, and
    # is served; one claiming UTC+16 is outside the bound and refused.
    x = zoo.sample(0)
    req = TorchRequest()
    for k, n in enumerate(INPUTS):
        req.add_feed(k, [1, 128], TorchRequest.DT_INT64, x[n].ravel().tolist())
    set_local_zone("UTC-14")
    check("TorchRequest from a UTC+14 client", 0, c.predict(req).get_values(0), zoo.reference)
    set_local_zone("UTC-16")
    expect_error("a Date 16 h off", lambda: c.predict(req), status=401, contains=["Date header"])
    set_local_zone("UTC")

    # Refusals: a wrong token (signed with it), a malformed protobuf body.
    expect_error("a wrong token", lambda: client(a, "not-the-token").predict(req), status=401,
                 contains=["wrong signature"])
    expect_error("a malformed body", lambda: c.predict(StringRequest("\x08\xff\xff")), status=400,
                 contains=["TFRequest or TorchRequest"])
    c.destroy()
    print("eas-prediction: all requests answered correctly")


if __name__ == "__main__":
    main()
