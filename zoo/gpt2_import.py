"""Import a GPT-2 checkpoint in Hugging Face's layout as a zoo run (``zoo import gpt2``).

    from zoo.gpt2_import import import_gpt2
    run = import_gpt2("checkpoints/gpt2", "runs/gpt2")
    run.generate("Once upon a time", max_new_tokens=50)

The folder holds ``config.json`` (``GPT2Config``), ``model.safetensors`` (or
``model.safetensors.index.json`` and its shards), ``vocab.json`` and ``merges.txt``. Tensors are
read with the ``safetensors`` package's NumPy API (no PyTorch), names with or without the
``transformer.`` prefix of ``GPT2LMHeadModel``; every tensor's shape is checked against
``config.json`` before anything is built. Mapping onto ``zoo.models.gpt2.GPT2`` (d = n_embd,
f = n_inner; GPT-2's Conv1D computes ``x W + b`` with ``W (in, out)``, a Keras ``Dense`` kernel
as it is):

    wte.weight (V, d)                  embedding.token_embedding (also the tied output layer)
    wpe.weight (P, d)                  embedding.position_embedding
    h.i.ln_1.{weight,bias}             block_i.attention_norm {gamma,beta}
    h.i.attn.c_attn (d, 3d)            block_i.attention.qkv_dense: [W^Q | W^K | W^V], heads of
                                         d / n_head consecutive columns in each block, as it is
    h.i.attn.c_proj (d, d)             block_i.attention.output_dense
    h.i.ln_2                           block_i.ffn_norm
    h.i.mlp.c_fc (d, f)                block_i.ffn_inner
    h.i.mlp.c_proj (f, d)              block_i.ffn_outer
    ln_f                               final_norm

``h.i.attn.bias`` / ``masked_bias`` (the causal-mask buffers) are skipped; ``lm_head.weight``,
when present, must equal ``wte.weight`` (GPT-2 ties them).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np

from zoo import progress
from zoo.errors import ZooError
from zoo.files import file_sha256, read_json
from zoo.importers import check_new_run_dir, write_run

if TYPE_CHECKING:
    from zoo.run import LoadedRun

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
# GELU with the tanh approximation under its Hugging Face names (GPT-2's is "gelu_new")
TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
EVAL_BATCH_SIZE = 2  # zoo eval's default batch for an imported run (full-context windows)
_BUFFERS = (".attn.bias", ".attn.masked_bias")
_NOT_GPT2 = "not found: not a GPT-2 checkpoint folder"  # read_json's words for a missing file


# ------------------------------------------------------------------------------------------------
# config.json


def model_settings(config: dict, path: str = CONFIG) -> dict:
    """``GPT2Config`` fields (zoo names) from a Hugging Face GPT-2 ``config.json``; ``ZooError``
    for anything the zoo's GPT-2 does not compute the same way."""
    if config.get("model_type", "gpt2") != "gpt2":
        raise ZooError(f"{path}: model_type is {config.get('model_type')!r}, not 'gpt2'")
    activation = config.get("activation_function", "gelu_new")
    if activation not in TANH_GELU:
        raise ZooError(
            f"{path}: unsupported activation_function {activation!r}: the zoo's gpt2 uses GELU "
            f"with the tanh approximation ({', '.join(TANH_GELU)})"
        )
    unsupported = {
        "scale_attn_weights": (True, "attention scores divided by sqrt(head_dim)"),
        "scale_attn_by_inverse_layer_idx": (False, "no per-layer attention scaling"),
        "add_cross_attention": (False, "no cross-attention"),
        "tie_word_embeddings": (True, "the output layer tied to the token embedding"),
    }
    for key, (expected, meaning) in unsupported.items():
        if config.get(key, expected) != expected:
            raise ZooError(f"{path}: unsupported {key}={config[key]!r} (the zoo's gpt2 has "
                           f"{meaning})")
    sizes = {}
    for zoo_name, names in (("num_layers", ("n_layer",)), ("num_heads", ("n_head",)),
                            ("d_model", ("n_embd",)), ("max_length", ("n_positions", "n_ctx")),
                            ("vocab_size", ("vocab_size",))):
        value = next((config[n] for n in names if n in config), None)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ZooError(f"{path}: {names[0]} must be a positive integer, got {value!r}")
        sizes[zoo_name] = value
    if sizes["d_model"] % sizes["num_heads"]:
        raise ZooError(f"{path}: n_embd={sizes['d_model']} is not divisible by "
                       f"n_head={sizes['num_heads']}")
    inner = config.get("n_inner") or 4 * sizes["d_model"]
    epsilon = config.get("layer_norm_epsilon", 1e-5)
    if not isinstance(inner, int) or not isinstance(epsilon, (int, float)) or epsilon <= 0:
        raise ZooError(f"{path}: bad n_inner={inner!r} or layer_norm_epsilon={epsilon!r}")
    dropout = float(config.get("resid_pdrop", 0.1))
    return dict(sizes, ffn_dim=inner, layer_norm_epsilon=float(epsilon), dropout=dropout)


def expected_shapes(s: dict) -> dict[str, tuple[int, ...]]:
    """Every tensor GPT-2 needs (names without ``transformer.``) and its shape."""
    d, f = s["d_model"], s["ffn_dim"]
    shapes = {"wte.weight": (s["vocab_size"], d), "wpe.weight": (s["max_length"], d),
              "ln_f.weight": (d,), "ln_f.bias": (d,)}
    for i in range(s["num_layers"]):
        for name, shape in (("ln_1.weight", (d,)), ("ln_1.bias", (d,)),
                            ("attn.c_attn.weight", (d, 3 * d)), ("attn.c_attn.bias", (3 * d,)),
                            ("attn.c_proj.weight", (d, d)), ("attn.c_proj.bias", (d,)),
                            ("ln_2.weight", (d,)), ("ln_2.bias", (d,)),
                            ("mlp.c_fc.weight", (d, f)), ("mlp.c_fc.bias", (f,)),
                            ("mlp.c_proj.weight", (f, d)), ("mlp.c_proj.bias", (d,))):
            shapes[f"h.{i}.{name}"] = shape
    return shapes


# ------------------------------------------------------------------------------------------------
# safetensors


class _Tensors:
    """Lazy access to a checkpoint's tensors by GPT-2 name (``transformer.`` prefix removed)."""

    def __init__(self, directory: str):
        from safetensors import safe_open

        single, index = os.path.join(directory, WEIGHTS), os.path.join(directory, WEIGHTS_INDEX)
        if os.path.isfile(single):
            files = [single]
        elif os.path.isfile(index):
            weight_map = read_json(index, missing=_NOT_GPT2).get("weight_map", {})
            files = sorted({os.path.join(directory, name) for name in weight_map.values()})
        else:
            raise ZooError(
                f"{directory} has no {WEIGHTS} (a PyTorch pytorch_model.bin is not read: save "
                "the model with save_pretrained(..., safe_serialization=True))"
            )
        self.files = files
        self._where: dict[str, tuple[object, str]] = {}
        for path in files:
            try:
                handle = safe_open(path, framework="numpy")
            except FileNotFoundError:
                raise ZooError(f"{path} not found (named by {WEIGHTS_INDEX})") from None
            except Exception as err:  # the package raises its own error types
                raise ZooError(f"{path} is not a valid safetensors file: {err}") from None
            for key in handle.keys():
                name = key.removeprefix("transformer.")
                self._where[name] = (handle, key)

    def names(self) -> set[str]:
        return set(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        handle, key = self._where[name]
        return tuple(handle.get_slice(key).get_shape())

    def get(self, name: str) -> np.ndarray:
        handle, key = self._where[name]
        try:
            value = handle.get_tensor(key)
        except Exception as err:  # e.g. bfloat16, which NumPy cannot hold
            raise ZooError(f"cannot read tensor {key}: {err}") from None
        return np.asarray(value, np.float32)


def check_tensors(tensors: _Tensors, shapes: dict[str, tuple[int, ...]]) -> None:
    """``ZooError`` naming missing, unexpected or wrongly shaped tensors."""
    names = tensors.names()
    missing = [n for n in shapes if n not in names]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ZooError(f"the checkpoint lacks tensor(s) {', '.join(missing[:5])}{more}")
    known = set(shapes) | {"lm_head.weight"}
    extra = sorted(n for n in names - known if not n.endswith(_BUFFERS))
    if extra:
        raise ZooError(f"the checkpoint has tensors config.json does not account for: "
                       f"{', '.join(extra[:5])} (does config.json match the weights?)")
    for name, want in [*shapes.items(), ("lm_head.weight", shapes["wte.weight"])]:
        if name in names and tensors.shape(name) != want:
            raise ZooError(f"tensor {name} has shape {tensors.shape(name)}, expected {want} "
                           "from config.json")


# ------------------------------------------------------------------------------------------------
# weights


def _dense(layer, kernel: np.ndarray, bias: np.ndarray) -> None:
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)


def _norm(layer, tensors: _Tensors, prefix: str) -> None:
    layer.gamma.assign(tensors.get(prefix + ".weight"))
    layer.beta.assign(tensors.get(prefix + ".bias"))


def load_weights(model, tensors: _Tensors, verbose: int = 0) -> None:
    """Copy the checkpoint's tensors into a ``GPT2`` model (mapping in the module docstring);
    ``verbose`` > 0: a bar over the blocks on stderr (``zoo.progress``)."""
    wte = tensors.get("wte.weight")
    if "lm_head.weight" in tensors.names() and not np.array_equal(
        tensors.get("lm_head.weight"), wte
    ):
        raise ZooError("lm_head.weight differs from wte.weight: an untied output layer is not "
                       "supported (the zoo's gpt2 ties them, as GPT-2 does)")
    model.embedding.token_embedding.embeddings.assign(wte)
    model.embedding.position_embedding.embeddings.assign(tensors.get("wpe.weight"))
    blocks = progress.track(model.blocks, "copying the weights, block by block",
                            len(model.blocks), verbose, unit="block")
    for i, block in enumerate(blocks):
        h = f"h.{i}."
        attention = block.attention
        _norm(block.attention_norm, tensors, h + "ln_1")
        _dense(attention.qkv_dense, tensors.get(h + "attn.c_attn.weight"),  # (d, 3d): q | k | v
               tensors.get(h + "attn.c_attn.bias"))
        _dense(attention.output_dense, tensors.get(h + "attn.c_proj.weight"),
               tensors.get(h + "attn.c_proj.bias"))
        _norm(block.ffn_norm, tensors, h + "ln_2")
        _dense(block.ffn_inner, tensors.get(h + "mlp.c_fc.weight"),
               tensors.get(h + "mlp.c_fc.bias"))
        _dense(block.ffn_outer, tensors.get(h + "mlp.c_proj.weight"),
               tensors.get(h + "mlp.c_proj.bias"))
    _norm(model.final_norm, tensors, "ln_f")


# ------------------------------------------------------------------------------------------------
# the import


def _digests(paths: list[str]) -> dict[str, str]:
    """``{file name: sha256}`` of the checkpoint's weight files (a stage: they are large)."""
    with progress.stage(f"computing the sha256 of {len(paths)} weight file(s)"):
        return {os.path.basename(p): file_sha256(p) for p in paths}


def import_gpt2(checkpoint_dir: str, out: str, verbose: int | None = None) -> LoadedRun:
    """Import the GPT-2 checkpoint in ``checkpoint_dir`` as the run directory ``out``.

    Returns the loaded run (``zoo.LoadedRun``): generation stops at ``<|endoftext|>`` (the
    config's ``eos_token_id``), as Hugging Face's ``generate`` does. Raises ``ZooError`` for a
    missing file or tensor, a wrong shape, an unsupported config or an ``out`` that exists.
    ``verbose`` > 0 shows each stage on stderr (None: the ambient level, ``zoo.progress``;
    ``zoo import`` shows them).
    """
    with progress.verbosity(verbose):
        return _import_gpt2(checkpoint_dir, out)


def _import_gpt2(checkpoint_dir: str, out: str) -> LoadedRun:
    from zoo.models import build_model
    from zoo.models.gpt2 import GPT2Config
    from zoo.tokenizers import ByteBPETokenizer

    start = time.perf_counter()
    directory = os.path.abspath(os.fspath(checkpoint_dir))
    if not os.path.isdir(directory):
        raise ZooError(f"checkpoint folder {checkpoint_dir!r} does not exist")
    check_new_run_dir(out)
    config_path = os.path.join(directory, CONFIG)
    config = read_json(config_path, missing=_NOT_GPT2)
    settings = model_settings(config, config_path)
    with progress.stage("reading the byte-level BPE tokenizer"):
        tokenizer = ByteBPETokenizer.from_files(os.path.join(directory, "vocab.json"),
                                                os.path.join(directory, "merges.txt"))
    vocab_size = settings.pop("vocab_size")
    if tokenizer.vocab_size != vocab_size:
        raise ZooError(f"vocab.json has {tokenizer.vocab_size} tokens but config.json says "
                       f"vocab_size={vocab_size}")
    with progress.stage("opening the checkpoint's tensors"):
        tensors = _Tensors(directory)
        check_tensors(tensors, expected_shapes(dict(settings, vocab_size=vocab_size)))

    model_config = GPT2Config(**settings)
    with progress.stage(f"building gpt2 ({model_config.num_layers} layers)") as building:
        model = build_model("gpt2", vocab_size, "small", **asdict(model_config))
        building.detail = f"{model.count_params():,} parameters"
    load_weights(model, tensors, progress.level())
    eos = config.get("eos_token_id")
    if isinstance(eos, bool) or not isinstance(eos, int) or not 0 <= eos < vocab_size:
        eos = tokenizer.end_of_text_id
    record = {
        "model": "gpt2",
        "preset": "small",
        "model_config": asdict(model_config),
        "vocab_size": vocab_size,
        "tokenizer": tokenizer.kind,
        "data": None,  # an imported run has no corpus: zoo eval --data says what to score
        "corpus_kind": "stream",
        "seq_len": model_config.max_length,
        "train": {"batch_size": EVAL_BATCH_SIZE},
        "stop_token_ids": [] if eos is None else [int(eos)],
        "imported": {
            "format": "huggingface-gpt2",
            "source": directory,
            "sha256": _digests(tensors.files),
        },
    }
    metrics = {"completed": True, "steps": 0, "parameters": int(model.count_params()),
               "import_seconds": round(time.perf_counter() - start, 2)}
    return write_run(out, model, tokenizer, record, metrics)
