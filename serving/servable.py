"""One loaded model version: a SavedModel opened with ``tf.saved_model.load``.

Only the SavedModel format is read (a protobuf graph plus variables): no pickles, no Keras
``.keras``/H5 files, no Python code from the model directory.  Every file the loader would open
must resolve inside the model's configured base path; a symlink that leads outside it makes the
load fail.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from zoo.export_contract import SERVE_TAG

from . import cancellation
from .errors import Code, ServingError, from_exception

__all__ = [
    "Servable",
    "Signature",
    "TensorInfo",
    "dtype_string",
    "is_within",
    "load_servable",
]


def dtype_string(dtype) -> str:
    """TensorFlow's ``DataTypeString``: ``float``, ``int64``, ``string``, ``half``..."""
    from tensorflow.core.framework import types_pb2

    enum = dtype if isinstance(dtype, int) else dtype.as_datatype_enum
    name = types_pb2.DataType.Name(enum)
    return name[3:].lower() if name.startswith("DT_") else name.lower()


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One input or output of a signature, as the SignatureDef proto describes it."""

    alias: str
    dtype: Any  # tf.DType
    shape: tuple[int, ...] | None  # None: unknown rank; -1: unknown dimension
    tensor_name: str


@dataclasses.dataclass(frozen=True)
class Signature:
    key: str
    method_name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]


def is_within(path: str, root: str) -> bool:
    """True when ``path`` (after resolving every symlink) lies inside ``root`` (also resolved)."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _check_tree_within(export_dir: str, base_path: str) -> None:
    """Every symlink under the version directory must stay inside the base path."""
    if not is_within(export_dir, base_path):
        raise ServingError(
            Code.PERMISSION_DENIED,
            f"Version directory {export_dir} resolves outside the model base path {base_path}",
        )
    count = 0
    for dirpath, dirnames, filenames in os.walk(export_dir, followlinks=False):
        for entry in dirnames + filenames:
            count += 1
            if count > 100_000:
                raise ServingError(Code.RESOURCE_EXHAUSTED, f"Too many files under {export_dir}")
            full = os.path.join(dirpath, entry)
            if os.path.islink(full) and not is_within(full, base_path):
                raise ServingError(
                    Code.PERMISSION_DENIED,
                    f"{full} is a symlink that resolves outside the model base path {base_path}",
                )


def _read_saved_model_proto(export_dir: str):
    from google.protobuf import message as pb_message
    from google.protobuf import text_format
    from tensorflow.core.protobuf import saved_model_pb2

    pb_path = os.path.join(export_dir, "saved_model.pb")
    pbtxt_path = os.path.join(export_dir, "saved_model.pbtxt")
    proto = saved_model_pb2.SavedModel()
    if os.path.isfile(pb_path):
        with open(pb_path, "rb") as f:
            data = f.read()
        try:
            proto.ParseFromString(data)
        except (pb_message.DecodeError, ValueError, RuntimeError) as exc:
            raise ServingError(Code.DATA_LOSS, f"Can't parse {pb_path} as binary proto") from exc
    elif os.path.isfile(pbtxt_path):
        with open(pbtxt_path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        try:
            text_format.Parse(text, proto)
        except text_format.ParseError as exc:
            raise ServingError(Code.DATA_LOSS, f"Can't parse {pbtxt_path} as text proto") from exc
    else:
        raise ServingError(
            Code.NOT_FOUND,
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {export_dir}",
        )
    return proto


def _tensor_info(alias: str, info) -> TensorInfo:
    import tensorflow as tf

    if info.tensor_shape.unknown_rank:
        shape = None
    else:
        shape = tuple(int(d.size) for d in info.tensor_shape.dim)
    try:
        dtype = tf.dtypes.as_dtype(info.dtype)
    except TypeError:
        dtype = tf.dtypes.as_dtype(1)
    return TensorInfo(alias=alias, dtype=dtype, shape=shape, tensor_name=info.name)


class Servable:
    """A loaded SavedModel version: its signatures (from the proto) and their functions."""

    def __init__(self, name: str, version: int, path: str, meta_graph, loaded):
        self.name = name
        self.version = int(version)
        self.path = path
        self.meta_graph = meta_graph
        self._loaded = loaded
        self._functions = dict(getattr(loaded, "signatures", {}) or {})
        self.signatures: dict[str, Signature] = {}
        for key, sig in meta_graph.signature_def.items():
            self.signatures[key] = Signature(
                key=key,
                method_name=sig.method_name,
                inputs={a: _tensor_info(a, i) for a, i in sig.inputs.items()},
                outputs={a: _tensor_info(a, i) for a, i in sig.outputs.items()},
            )

    def __repr__(self) -> str:
        return f"Servable({self.name!r}, version={self.version})"

    def signature(self, key: str) -> Signature | None:
        return self.signatures.get(key)

    def signature_def_map(self):
        """``tensorflow.serving.SignatureDefMap`` of every signature (GetModelMetadata)."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        out = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in self.meta_graph.signature_def.items():
            out.signature_def[key].CopyFrom(sig)
        return out

    def run(self, key: str, feeds: dict[str, Any]) -> dict[str, Any]:
        """Call signature ``key`` with tensors keyed by input alias; returns tensors by alias.

        Inside a :func:`serving.cancellation.scope`, the call stops (raising the scope's error)
        as soon as the request is cancelled, even in the middle of a decoding loop.
        """
        import tensorflow as tf

        fn = self._functions.get(key)
        if fn is None:
            raise ServingError(Code.FAILED_PRECONDITION, f'Serving signature key "{key}" not found.')
        try:
            result = cancellation.call(fn, feeds)  # stopped mid-run when the request is cancelled
        except tf.errors.OpError as exc:
            raise from_exception(exc) from exc
        except (TypeError, ValueError) as exc:
            raise ServingError(Code.INVALID_ARGUMENT, str(exc)) from exc
        if not isinstance(result, dict):
            result = {"output_0": result}
        return result


def _tag_set(tags) -> str:
    return "{ " + " ".join(sorted(tags)) + " }"


def load_servable(name: str, version: int, export_dir: str, base_path: str,
                  tags: tuple[str, ...] = (SERVE_TAG,)) -> Servable:
    """Load one SavedModel version directory or raise ServingError.

    ``tags`` (``--saved_model_tags``) picks the MetaGraph whose tag set equals them, as
    TensorFlow's ``LoadSavedModel`` does; a SavedModel without one fails with NOT_FOUND naming
    the tag sets it has.
    """
    import tensorflow as tf

    _check_tree_within(export_dir, base_path)
    proto = _read_saved_model_proto(export_dir)
    wanted = set(tags)
    meta_graph = None
    for mg in proto.meta_graphs:
        if set(mg.meta_info_def.tags) == wanted:
            meta_graph = mg
            break
    if meta_graph is None:
        found = ", ".join(_tag_set(mg.meta_info_def.tags) for mg in proto.meta_graphs) or "none"
        raise ServingError(
            Code.NOT_FOUND,
            f"Could not find meta graph def matching supplied tags: {_tag_set(wanted)}. To inspect "
            "available tag-sets in the SavedModel, please use the SavedModel CLI: `saved_model_cli` "
            f"(tag-sets in {export_dir}: {found})",
        )
    try:
        loaded = tf.saved_model.load(export_dir, tags=sorted(wanted))
    except Exception as exc:  # any load failure becomes the version's END status
        raise from_exception(exc) from exc
    return Servable(name, version, export_dir, meta_graph, loaded)
