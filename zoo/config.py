"""Training settings and ``--set key=value`` parsing."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from zoo.errors import ZooError

DEFAULT_VOCAB_SIZES = {"char": None, "word": None, "wordpiece": 4000, "sentencepiece": 2000}

# Where training runs (see zoo.distribute): one device, local GPUs, a TF_CONFIG cluster, a TPU.
DISTRIBUTE_CHOICES = ("none", "mirrored", "multiworker", "tpu")


@dataclass
class TrainConfig:
    """Everything ``zoo train`` needs besides the model's own sizes."""

    model: str
    data: str
    preset: str = "tiny"
    tokenizer: str = "char"
    vocab_size: int | None = None  # None: the tokenizer's default (all characters for "char")
    seq_len: int | None = None  # None: the model's context (transformer) or 64
    batch_size: int = 32  # the GLOBAL batch: split across replicas under a distribution strategy
    epochs: int | None = None  # None and no max_steps: one epoch
    max_steps: int | None = None
    learning_rate: float = 1e-3
    weight_decay: float = 0.01  # AdamW, decoupled
    beta_2: float = 0.99  # as nanoGPT for small models
    warmup_steps: int | None = None  # None: 5% of the steps, at most 100
    min_learning_rate_ratio: float = 0.1  # cosine decays to this fraction of the peak
    clipnorm: float = 1.0  # global gradient-norm clipping
    checkpoint_every: int = 100  # steps; validation runs at the same points
    eval_batches: int | None = 50  # validation batches at each checkpoint (None: the whole split)
    early_stopping_patience: int | None = None  # checkpoints without improvement before stopping
    seed: int = 1337
    # None: the device's default (bfloat16 on compute capability >= 8.0, float16 on 7.x, else
    # float32); True / False; or a policy name: mixed_bfloat16, mixed_float16, float32
    mixed_precision: bool | str | None = None
    jit_compile: bool | None = None  # None: XLA on a GPU
    distribute: str = "none"  # none | mirrored | multiworker | tpu (see zoo.distribute)
    backend: str | None = None  # tensorflow | jax; None: the Keras backend of the process
    target_validation_loss: float | None = None  # stop at a checkpoint whose validation loss <= it
    model_overrides: dict = field(default_factory=dict)

    def __post_init__(self):
        positive = ["batch_size", "checkpoint_every"]
        positive += [n for n in ("epochs", "max_steps", "seq_len", "eval_batches") if getattr(self, n) is not None]
        for name in positive:
            if getattr(self, name) < 1:
                raise ZooError(f"{name} must be >= 1. Received: {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ZooError(f"learning_rate must be > 0. Received: {self.learning_rate}")
        if self.tokenizer not in DEFAULT_VOCAB_SIZES:
            raise ZooError(
                f"unknown tokenizer {self.tokenizer!r}; choose one of: {', '.join(DEFAULT_VOCAB_SIZES)}"
            )
        if self.backend is not None:
            from zoo.backends import check_name

            check_name(self.backend)
        if isinstance(self.mixed_precision, str):
            from zoo.backends import mixed_precision_policy

            mixed_precision_policy(self.mixed_precision)  # a known policy name, or ZooError
        if self.distribute not in DISTRIBUTE_CHOICES:
            raise ZooError(
                f"unknown distribute {self.distribute!r}; choose one of: {', '.join(DISTRIBUTE_CHOICES)}"
            )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"model", "data", "model_overrides"}


def parse_value(text: str):
    """``"4"`` -> 4, ``"0.1"`` -> 0.1, ``"true"`` -> True, ``"null"`` -> None, else the string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_settings(items: list[str]) -> tuple[dict, dict]:
    """Split ``["model.num_layers=4", "train.weight_decay=0.1", "seed=3"]`` into
    (model overrides, training overrides). Keys without a prefix are training settings."""
    model_overrides, train_overrides = {}, {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ZooError(f"--set expects key=value. Received: {item!r}")
        section, dot, name = key.partition(".")
        if not dot:
            section, name = "train", key
        if section == "model":
            model_overrides[name] = parse_value(value)
        elif section == "train":
            if name not in TRAIN_FIELDS:
                raise ZooError(
                    f"unknown setting {key!r}; training settings: {', '.join(sorted(TRAIN_FIELDS))}; "
                    "model settings are model.<name>"
                )
            train_overrides[name] = parse_value(value)
        else:
            raise ZooError(f"unknown setting {key!r}: use model.<name> or train.<name>")
    return model_overrides, train_overrides
