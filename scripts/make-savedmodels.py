#!/usr/bin/env python3
"""Makes the TensorFlow SavedModel fixtures in optimizer/tests/savedmodels/.

Each fixture is a SavedModel folder written by TensorFlow itself, beside the
inputs it was run on and TensorFlow's own outputs for them, which the importer's
tests compare against (1e-4):

  <name>/model/                     saved_model.pb, variables/
  <name>/<signature>.inputs.npz     one array per signature input (its key)
  <name>/<signature>.outputs.npz    one array per signature output (its key)

  keras_convnet   tf.saved_model.save of a Keras conv net (Conv2D, batch
                  norm, max pool, dense, softmax): TF2 resource variables and
                  nested function calls.
  text_gru        tf.saved_model.save of a Keras text model: an embedding and
                  a GRU (unrolled: a While loop is refused, as in frozen
                  graphs) over int32 token ids.
  text_gru_loop   the same model with the GRU left rolled (a While loop),
                  which the importer refuses naming the loop's node.
  two_signatures  tf.saved_model.save of a tf.Module with two signatures,
                  `serving_default` and `scores`, sharing variables.
  embedding_lookup a tf.Module whose function gathers rows of a variable
                  (tf.nn.embedding_lookup: a ResourceGather on the handle).
  tf1_simple_save tf.compat.v1.saved_model.simple_save of a TF1 graph:
                  VariableV2 variables and a Saver's restore ops.

They are committed (a few hundred KiB) so that the tests need no TensorFlow.
To rebuild them (TensorFlow 2.x, e.g. `pip install tensorflow-cpu`):

  python3 scripts/make-savedmodels.py [OUT]   # OUT: optimizer/tests/savedmodels
"""

import os
import shutil
import sys

import numpy as np
import tensorflow as tf

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "optimizer", "tests", "savedmodels")
rng = np.random.default_rng(7)
# Keras's initializers draw from its own seed generator: seeded too, so
# that a rebuild writes the same weights.
import keras  # noqa: E402

keras.utils.set_random_seed(7)


def reference(name, signatures):
    """Runs every signature of the saved model on its inputs, as a server
    would load it, and stores inputs and outputs beside it."""
    loaded = tf.saved_model.load(os.path.join(OUT, name, "model"))
    for sig, inputs in signatures.items():
        fn = loaded.signatures[sig]
        outputs = fn(**{k: tf.constant(v) for k, v in inputs.items()})
        np.savez(os.path.join(OUT, name, f"{sig}.inputs.npz"), **inputs)
        np.savez(os.path.join(OUT, name, f"{sig}.outputs.npz"),
                 **{k: v.numpy() for k, v in outputs.items()})


def fresh(name):
    path = os.path.join(OUT, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return os.path.join(path, "model")


def keras_convnet():
    import keras
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(6, 3, padding="same", name="conv1")(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(5, activation="softmax", name="probs")(x)
    model = keras.Model(inp, out)
    # Batch-norm statistics that are not the identity, so that they count.
    bn = model.get_layer("bn1")
    bn.moving_mean.assign(rng.normal(0, 0.5, 6).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, 6).astype("float32"))
    tf.saved_model.save(model, fresh("keras_convnet"))
    image = rng.normal(0, 1, (2, 16, 16, 3)).astype("float32")
    reference("keras_convnet", {"serving_default": {"inputs": image}})


def text_gru():
    import keras
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(100, 8, name="embed")(tokens)
    x = keras.layers.GRU(8, unroll=True, name="gru")(x)
    out = keras.layers.Dense(2, name="logits")(x)
    model = keras.Model(tokens, out)
    tf.saved_model.save(model, fresh("text_gru"))
    ids = rng.integers(0, 100, (3, 12)).astype("int32")
    reference("text_gru", {"serving_default": {"inputs": ids}})


def text_gru_loop():
    import keras
    tokens = keras.Input((12,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(100, 8, name="embed")(tokens)
    x = keras.layers.GRU(8, name="gru")(x)
    out = keras.layers.Dense(2, name="logits")(x)
    tf.saved_model.save(keras.Model(tokens, out), fresh("text_gru_loop"))


class TwoHeads(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(rng.normal(0, 1, (4, 3)).astype("float32"), name="w")
        self.b = tf.Variable(rng.normal(0, 1, (3,)).astype("float32"), name="b")

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
    def classify(self, features):
        logits = tf.matmul(features, self.w) + self.b
        return {"probabilities": tf.nn.softmax(logits), "label": tf.argmax(logits, axis=1)}

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x"),
                                  tf.TensorSpec([None, 3], tf.float32, name="weights")])
    def scores(self, x, weights):
        return {"score": tf.reduce_sum(tf.tanh(tf.matmul(x, self.w)) * weights, axis=1)}


def two_signatures():
    module = TwoHeads()
    tf.saved_model.save(module, fresh("two_signatures"),
                        signatures={"serving_default": module.classify, "scores": module.scores})
    features = rng.normal(0, 1, (3, 4)).astype("float32")
    weights = rng.normal(0, 1, (3, 3)).astype("float32")
    reference("two_signatures", {"serving_default": {"features": features},
                                 "scores": {"x": features, "weights": weights}})


class Lookup(tf.Module):
    def __init__(self):
        super().__init__()
        self.table = tf.Variable(rng.normal(0, 1, (20, 4)).astype("float32"), name="table")

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.int64, name="ids")])
    def __call__(self, ids):
        return {"vectors": tf.reduce_mean(tf.nn.embedding_lookup(self.table, ids), axis=1)}


def embedding_lookup():
    module = Lookup()
    tf.saved_model.save(module, fresh("embedding_lookup"),
                        signatures={"serving_default": module.__call__})
    ids = rng.integers(0, 20, (2, 3)).astype("int64")
    reference("embedding_lookup", {"serving_default": {"ids": ids}})


def tf1_simple_save():
    path = fresh("tf1_simple_save")
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.disable_resource_variables()
        x = tf.compat.v1.placeholder(tf.float32, [None, 6], name="x")
        w1 = tf.compat.v1.get_variable(
            "dense/kernel", initializer=rng.normal(0, 0.5, (6, 10)).astype("float32"))
        b1 = tf.compat.v1.get_variable(
            "dense/bias", initializer=rng.normal(0, 0.5, (10,)).astype("float32"))
        w2 = tf.compat.v1.get_variable(
            "out/kernel", initializer=rng.normal(0, 0.5, (10, 2)).astype("float32"))
        h = tf.nn.relu(tf.matmul(x, w1) + b1)
        y = tf.identity(tf.matmul(h, w2), name="y")
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.saved_model.simple_save(sess, path, inputs={"x": x}, outputs={"y": y})
    tf.compat.v1.enable_resource_variables()
    reference("tf1_simple_save",
              {"serving_default": {"x": rng.normal(0, 1, (4, 6)).astype("float32")}})


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    keras_convnet()
    text_gru()
    text_gru_loop()
    two_signatures()
    tf1_simple_save()
    embedding_lookup()
    print(f"SavedModel fixtures written to {os.path.normpath(OUT)}")
