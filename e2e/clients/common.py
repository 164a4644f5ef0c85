"""What the client scripts share: their arguments, the zoo's MiniLM test
sentences and fp32 references, and the accuracy check (max abs error 1e-4,
as e2e/tests/deploy.rs checks)."""

import argparse
import os

import numpy as np

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT = "last_hidden_state"
TOLERANCE = 1e-4


def args(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--url", required=True, help="server, e.g. http://127.0.0.1:8080")
    p.add_argument("--service", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--zoo", required=True, help="folder with test_minilm.npz, ref_minilm.npz")
    p.add_argument("--samples", type=int, default=3, help="test sentences to send per request kind")
    p.add_argument("--grpc", help="the server's gRPC address (--grpc-addr), e.g. 127.0.0.1:8081")
    return p.parse_args()


def host_port(url):
    return url.split("://", 1)[-1].rstrip("/")


class Zoo:
    def __init__(self, folder):
        test = np.load(os.path.join(folder, "test_minilm.npz"))
        # One int64 [1, 128] array per input per sentence.
        self.inputs = {name: test[name].astype(np.int64) for name in INPUTS}
        self.reference = np.load(os.path.join(folder, "ref_minilm.npz"))[OUTPUT]

    def sample(self, i):
        return {name: self.inputs[name][i : i + 1] for name in INPUTS}


def check(what, i, got, reference):
    got = np.asarray(got, dtype=np.float32).reshape(reference[i : i + 1].shape)
    err = float(np.max(np.abs(got - reference[i : i + 1])))
    if not err <= TOLERANCE:
        raise AssertionError(f"{what}, sentence {i}: max abs error {err} > {TOLERANCE}")
    print(f"{what}, sentence {i}: max abs error {err:.2e}")
    return err


def expect_error(what, call, status=None, contains=()):
    """Runs `call`, which must fail; the failure's text must hold `status`
    and each of `contains`."""
    try:
        call()
    except Exception as e:  # each client has its own exception type
        # The EAS SDK's PredictException has .code, Triton's exception a
        # .status() method; both texts hold the message.
        status_of = getattr(e, "status", "")
        code = status_of() if callable(status_of) else getattr(e, "code", "")
        text = f"{code} {e}"
        for want in ([str(status)] if status else []) + list(contains):
            if want not in text:
                raise AssertionError(f"{what}: expected {want!r} in the error, got {text}")
        print(f"{what}: refused as expected ({text.strip()[:160]})")
        return
    raise AssertionError(f"{what}: expected an error, the call succeeded")
