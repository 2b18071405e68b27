"""Small SavedModels for the serving tests, built with plain TensorFlow.

* ``half_plus_two`` (TF2): ``serving_default`` x float [None] -> y = x/2 + offset (counts its
  calls in a variable), ``matrix`` x float [None, None] -> y, ``count`` -> the call counter (a
  scalar output), ``mismatch`` -> two outputs of different batch sizes, ``spin`` n int32 scalar
  -> a loop of n steps (for the timeout test).
* ``two_input`` (TF2): a float [None, 2], b int64 [None] -> sum float [None], name_bytes and
  label (strings [None]).
* ``strings`` (TF2): text string [None] -> upper (string), lengths (int32); ``typed``: i32 int32,
  f64 float64, flag bool, all [None] -> the same values back.
* ``classreg`` (TF1 graph, built with the v1 SavedModel builder): ``regress_x_to_y`` and
  ``classify_x_to_y`` take serialized tf.Examples with a float feature x and return x/2 + 2.
"""

from __future__ import annotations

import os

import tensorflow as tf


def save_half_plus_two(path: str, offset: float = 2.0) -> str:
    class HalfPlusTwo(tf.Module):
        def __init__(self):
            super().__init__()
            self.calls = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.offset = tf.Variable(offset, dtype=tf.float32, trainable=False)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            self.calls.assign_add(1)
            return {"y": x / 2.0 + self.offset}

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="x")])
        def matrix(self, x):
            return {"y": x / 2.0 + self.offset}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def count(self, x):
            return {"count": self.calls.read_value()}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def mismatch(self, x):
            return {"all": x, "first": x[:1]}

        @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="n")])
        def spin(self, n):
            def body(i, acc):
                return i + 1, tf.sin(acc) + 1.0

            _, acc = tf.while_loop(lambda i, acc: i < n, body, (tf.constant(0), tf.constant(0.0)))
            return {"acc": tf.reshape(acc, [1])}

    module = HalfPlusTwo()
    tf.saved_model.save(
        module,
        path,
        signatures={
            "serving_default": module.serve,
            "matrix": module.matrix,
            "count": module.count,
            "mismatch": module.mismatch,
            "spin": module.spin,
        },
    )
    return path


def save_two_input(path: str) -> str:
    class TwoInput(tf.Module):
        @tf.function(
            input_signature=[
                tf.TensorSpec([None, 2], tf.float32, name="a"),
                tf.TensorSpec([None], tf.int64, name="b"),
            ]
        )
        def serve(self, a, b):
            text = tf.strings.as_string(b)
            return {
                "sum": tf.reduce_sum(a, axis=1) + tf.cast(b, tf.float32),
                "name_bytes": text,
                "label": tf.strings.join(["n", text]),
            }

    module = TwoInput()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def save_strings(path: str) -> str:
    class Strings(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text):
            return {"upper": tf.strings.upper(text), "lengths": tf.strings.length(text)}

        @tf.function(
            input_signature=[
                tf.TensorSpec([None], tf.int32, name="i32"),
                tf.TensorSpec([None], tf.float64, name="f64"),
                tf.TensorSpec([None], tf.bool, name="flag"),
            ]
        )
        def typed(self, i32, f64, flag):
            return {"i32": tf.identity(i32), "f64": tf.identity(f64), "flag": tf.logical_not(flag)}

    module = Strings()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve, "typed": module.typed})
    return path


def save_classreg(path: str) -> str:
    """A TF1-style SavedModel with classify and regress signatures (TF Serving's test model)."""
    graph = tf.Graph()
    with graph.as_default():
        serialized = tf.compat.v1.placeholder(tf.string, [None], name="tf_example")
        features = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([1], tf.float32)})
        offset = tf.compat.v1.get_variable("offset", initializer=tf.constant(2.0))
        y = features["x"] / 2.0 + offset
        x_in = tf.compat.v1.placeholder(tf.float32, [None], name="x")
        y_plain = x_in / 2.0 + offset
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(path)
            signatures = {
                "regress_x_to_y": tf.compat.v1.saved_model.regression_signature_def(serialized, y),
                "classify_x_to_y": tf.compat.v1.saved_model.classification_signature_def(
                    serialized, None, y
                ),
                "serving_default": tf.compat.v1.saved_model.predict_signature_def({"x": x_in}, {"y": y_plain}),
            }
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map=signatures)
            builder.save()
    return path


def write_warmup(version_dir: str, records: int, model_name: str = "warm") -> str:
    """``assets.extra/tf_serving_warmup_requests`` with ``records`` PredictRequests for x=[1.0]."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    extra = os.path.join(version_dir, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    path = os.path.join(extra, "tf_serving_warmup_requests")
    with tf.io.TFRecordWriter(path) as writer:
        for _ in range(records):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default")
            )
            request.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0], dtype=tf.float32))
            entry = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(entry.SerializeToString())
    return path


def build_store(root: str) -> dict[str, str]:
    """Build every test model once under ``root``; returns {key: SavedModel directory}."""
    store = {
        "hpt2": save_half_plus_two(os.path.join(root, "hpt2"), offset=2.0),
        "hpt3": save_half_plus_two(os.path.join(root, "hpt3"), offset=3.0),
        "two_input": save_two_input(os.path.join(root, "two_input")),
        "strings": save_strings(os.path.join(root, "strings")),
        "classreg": save_classreg(os.path.join(root, "classreg")),
    }
    return store
