"""Set a signature's ``method_name`` in a saved ``saved_model.pb``.

TF2's ``tf.saved_model.save`` writes every signature with method_name
``tensorflow/serving/predict``; TF Serving's Classify and Regress APIs only accept signatures
whose method_name is ``tensorflow/serving/classify`` / ``tensorflow/serving/regress``. This
rewrites the protocol buffer after saving (the graph and variables are untouched).
"""

from __future__ import annotations

import os

from zoo.errors import ZooError
from zoo.export_contract import CLASSIFY_METHOD, PREDICT_METHOD, REGRESS_METHOD  # noqa: F401


def set_method_names(export_dir: str, methods: dict[str, str]) -> None:
    """Give each signature key of ``methods`` its method_name in ``export_dir/saved_model.pb``."""
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(export_dir, "saved_model.pb")
    proto = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        proto.ParseFromString(f.read())
    signatures = proto.meta_graphs[0].signature_def
    for key, method in methods.items():
        if key not in signatures:
            raise ZooError(f"{export_dir}: no signature {key!r} to set the method_name of")
        signatures[key].method_name = method
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(proto.SerializeToString())
    os.replace(tmp, path)
