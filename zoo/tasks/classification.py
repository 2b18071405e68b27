"""The classification task (``text_classifier``): train, evaluate, classify, export.

Data (``zoo.data.labelled``): ``dataset:sst2`` or a labelled TSV/CSV file; labels are strings,
the class names (sorted; sst2: negative, positive) are stored in ``model_config.class_names``.
Each text becomes ``[CLS] ids [SEP]`` (``<bos>``/``<eos>``), cut and padded to ``seq_len``.
Training batch ``s`` draws its rows with a stateless seed ``(seed, s)``, so resume replays it.

Encoders: ``model.encoder=transformer`` (the ``bert_mlm`` encoder; from scratch, or
``model.pretrained=RUN_DIR`` copies a ``bert_mlm`` run's encoder weights and sizes and reuses its
tokenizer) or ``model.encoder=lstm``. Loss: cross-entropy of the softmax over the classes.

``zoo eval`` JSON: ``accuracy``, ``macro_f1`` (mean over classes of F1_c = 2 P_c R_c / (P_c +
R_c)), ``f1_per_class``, for two classes ``f1`` (of the second class, e.g. positive), ``loss``
(mean cross-entropy), ``examples``. A ``--data`` file other than the training data is scored
whole (split ``all``).

Export signatures (batch ``B``, ``C`` classes):

``classify``  (method_name ``tensorflow/serving/classify``: TF Serving's Classify API)
    ``inputs`` string ``[B]`` serialized ``tf.Example`` protos with a bytes feature ``text``
    (missing: the empty text) -> ``classes`` string ``[B, C]`` (the class names, in model order)
    and ``scores`` float32 ``[B, C]`` (softmax probabilities).
``predict`` (also ``serving_default``)
    ``text`` string ``[B]`` -> ``label`` string ``[B]`` (the most probable class), ``scores``
    float32 ``[B, C]``, ``classes`` string ``[B, C]``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from zoo import distribute as zdist
from zoo import progress
from zoo.backends import model_function
from zoo.data import labelled
from zoo.data.masking import with_cls_sep
from zoo.errors import ZooError
from zoo.files import CONFIG_FILE, MODEL_FILE, TOKENIZER_DIR, read_json
from zoo.fitting import (
    FitPlan,
    context_config,
    finish_run,
    fit_resumable,
    open_run,
    run_record,
    write_record,
)
from zoo.metrics import classification_scores
from zoo.models import build_model, make_config
from zoo.models.bert_mlm import ENCODER_FIELDS
from zoo.run import LoadedRun
from zoo.tasks.base import Task, register_task
from zoo.tasks.export_module import ExportModule
from zoo.tasks.warmup import predict_logs, sample_rows, text_array
from zoo.tokenizers import load_tokenizer, train_tokenizer
from zoo.training import make_settings

TEXT_FEATURE = "text"


# the tokenizer a model trains with when none is given: TextCNN reads words (Kim 2014), so that
# word vectors (model.embeddings) match its tokens; the Transformer encoders read word pieces
DEFAULT_TOKENIZERS = {"text_cnn": "word"}


def encode(tokenizer, texts: list[str], seq_len: int) -> np.ndarray:
    """Texts -> int32 ``(N, seq_len)`` rows ``[CLS] ids [SEP]`` (cut, right-padded with 0)."""
    rows = []
    for i in range(0, len(texts), 8192):
        ids = with_cls_sep(tokenizer.tokenize(tf.constant(texts[i:i + 8192], tf.string)), seq_len)
        ids = ids.numpy()
        rows.append(np.pad(ids, [[0, 0], [0, seq_len - ids.shape[1]]]))
    return np.concatenate(rows).astype(np.int32) if rows else np.zeros([0, seq_len], np.int32)


def _pretrained(path: str) -> dict:
    """A finished bert_mlm run's config (checked)."""
    if not os.path.isfile(os.path.join(path, CONFIG_FILE)):
        raise ZooError(f"model.pretrained={path!r} is not a run directory (no {CONFIG_FILE})")
    config = read_json(os.path.join(path, CONFIG_FILE))
    if config.get("model") != "bert_mlm":
        raise ZooError(f"model.pretrained={path!r} holds a {config.get('model')} run, "
                       "not bert_mlm")
    if not os.path.isfile(os.path.join(path, MODEL_FILE)):
        raise ZooError(f"model.pretrained={path!r} is not finished ({MODEL_FILE} is missing)")
    return config


def copy_pretrained_encoder(model, path: str) -> None:
    """Copy the encoder weights of the bert_mlm run at ``path`` into ``model.encoder``."""
    pre = keras.saving.load_model(os.path.join(path, MODEL_FILE), safe_mode=True, compile=False)
    model.encoder.set_weights(pre.encoder.get_weights())


def train(model: str, data: str, out: str, *, preset: str = "tiny", tokenizer: str | None = None,
          model_overrides: dict | None = None, verbose: int = 1, **train_settings) -> LoadedRun:
    """Train a text classifier on ``data`` into ``out`` (resumable; see ``zoo.fitting``)."""
    from zoo.config import DEFAULT_VOCAB_SIZES

    overrides = dict(model_overrides or {})
    pretrained = overrides.get("pretrained") or ""
    pre_config = None
    if pretrained:
        make_config(model, preset, pretrained=str(pretrained))  # a model with no encoder refuses
        pretrained = os.path.abspath(os.path.expanduser(str(pretrained)))
        overrides["pretrained"] = pretrained
        pre_config = _pretrained(pretrained)
        if overrides.get("encoder", "transformer") != "transformer":
            raise ZooError("model.pretrained needs the transformer encoder (a bert_mlm run)")
        overrides.update({k: v for k, v in pre_config["model_config"].items()
                          if k in ENCODER_FIELDS and k != "dropout"})
        if tokenizer not in (None, pre_config["tokenizer"]):
            raise ZooError(f"model.pretrained uses its run's {pre_config['tokenizer']} tokenizer, "
                           f"not {tokenizer}")
        tokenizer = pre_config["tokenizer"]
    settings = make_settings(model, data, preset, tokenizer, overrides, train_settings,
                             default_tokenizer=DEFAULT_TOKENIZERS.get(model, "wordpiece"))
    strategy, worker = zdist.make_strategy(settings.distribute)
    train_texts, train_labels = labelled.load_labelled(data, "train")
    names = labelled.class_names(train_labels, data)
    overrides.update(num_classes=len(names), class_names=tuple(names))
    model_config, seq_len = context_config(model, preset, settings, overrides)
    record = run_record("classification", settings, model_config, seq_len)
    record["model_config"]["class_names"] = list(names)
    previous, finished = open_run(out, record, worker)
    if finished is not None:
        return finished

    tokenizer_dir = os.path.join(out, TOKENIZER_DIR)
    if os.path.exists(os.path.join(tokenizer_dir, "tokenizer.json")) and (
        worker.is_chief or previous is not None
    ):
        tok = load_tokenizer(tokenizer_dir)
    elif pre_config is not None:
        tok = load_tokenizer(os.path.join(pretrained, TOKENIZER_DIR))
        if worker.is_chief:
            shutil.copytree(os.path.join(pretrained, TOKENIZER_DIR), tokenizer_dir,
                            dirs_exist_ok=True)
    else:
        vocab_size = settings.vocab_size or DEFAULT_VOCAB_SIZES[settings.tokenizer]
        tok = train_tokenizer(settings.tokenizer, train_texts, vocab_size=vocab_size,
                              verbose=verbose)
        if worker.is_chief:
            tok.save(tokenizer_dir)
    vocab_size = int(pre_config["vocab_size"]) if pre_config is not None else tok.vocab_size
    record.update(vocab_size=vocab_size)
    write_record(out, record, previous, worker)

    x_train = encode(tok, train_texts, seq_len)
    y_train = labelled.label_ids(train_labels, names, data)
    valid_texts, valid_labels = labelled.load_labelled(data, "validation")
    x_valid = encode(tok, valid_texts, seq_len)
    y_valid = labelled.label_ids(valid_labels, names, data)
    total_steps, make_train_ds, make_valid_ds = array_datasets(x_train, y_train, x_valid, y_valid,
                                                               settings)

    def build():
        built = build_model(model, vocab_size, preset, **dataclasses.asdict(model_config))
        if pre_config is not None:
            copy_pretrained_encoder(built, pretrained)
        return built

    plan = FitPlan(
        build_model=build,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        make_metrics=lambda: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        make_train_ds=make_train_ds,
        make_valid_ds=make_valid_ds,
        total_steps=total_steps,
        monitor="val_accuracy",
        monitor_mode="max",
        agree={"the vocabulary size": vocab_size, "the training rows": len(x_train)},
        tokenizer=tok,  # model.embeddings matches its tokens
    )
    result = fit_resumable(out, settings, strategy, worker, plan, verbose=verbose)
    metrics = {}
    if result.is_chief:
        final = scores_report(predict_probabilities(result.model, x_valid, settings.batch_size, verbose),
                              y_valid, names)
        metrics = result.summary(settings)
        metrics.update(total_steps=total_steps, validation=final)
    return finish_run(out, result, metrics, record, tok)


def array_datasets(x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray,
                   y_valid: np.ndarray, settings):
    """``(total_steps, make_train_ds, make_valid_ds)`` of a ``FitPlan`` over in-memory arrays:
    ``settings.max_steps`` (else ``epochs`` passes over ``x_train``), training batches drawn by
    ``training_dataset``, validation in order (``settings.eval_batches`` of them, 0: all)."""
    batch = settings.batch_size
    if settings.max_steps is not None:
        total_steps = settings.max_steps
    else:
        total_steps = (settings.epochs or 1) * math.ceil(len(x_train) / batch)

    def make_train_ds(start_step: int, num_steps: int) -> tf.data.Dataset:
        return training_dataset(x_train, y_train, batch, settings.seed, start_step, num_steps)

    def make_valid_ds() -> tf.data.Dataset:
        valid = tf.data.Dataset.from_tensor_slices((x_valid, y_valid)).batch(batch)
        return valid.take(settings.eval_batches) if settings.eval_batches else valid

    return total_steps, make_train_ds, make_valid_ds


def training_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int,
                     start_step: int = 0, num_steps: int | None = None) -> tf.data.Dataset:
    """Batches ``(ids (B, T), labels (B,))``; batch ``s`` draws its rows uniformly with the
    stateless seed ``(seed, s)``."""
    if len(x) < 1:
        raise ZooError("the training split has no labelled texts")
    x_t, y_t = tf.constant(x), tf.constant(y)
    seed_t = tf.constant(int(seed), tf.int64)

    def make_batch(step):
        rows = tf.random.stateless_uniform([batch_size], tf.stack([seed_t, step]), minval=0,
                                           maxval=len(x), dtype=tf.int64, alg="philox")
        return tf.gather(x_t, rows), tf.gather(y_t, rows)

    if num_steps is None:
        steps = tf.data.Dataset.counter(start=int(start_step), dtype=tf.int64)
    else:
        steps = tf.data.Dataset.range(int(start_step), int(start_step) + int(num_steps))
    return steps.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=True).prefetch(tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------------------
# evaluation and the Python API


def predict_probabilities(model, x: np.ndarray, batch_size: int, verbose: int = 0) -> np.ndarray:
    """Softmax class probabilities ``(N, C)`` (float64) of the rows ``x`` (``verbose`` > 0: a
    progress bar on stderr, ``zoo.progress``)."""

    def logits(call, ids):
        return ops.cast(call(ids), "float32")

    step = model_function(model, logits)
    parts = []
    starts = range(0, len(x), batch_size)
    label = f"classifying {len(x)} examples (batches of {batch_size})"
    for i in progress.track(starts, label, verbose=verbose):
        z = np.asarray(step(x[i:i + batch_size]), np.float64)  # softmax in float64, here
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        parts.append(z / z.sum(axis=-1, keepdims=True))
    return np.concatenate(parts) if parts else np.zeros([0, model.num_classes])


def scores_report(probabilities: np.ndarray, labels: np.ndarray, names: list[str]) -> dict:
    """``zoo eval``'s JSON from class probabilities and true class indices."""
    predictions = probabilities.argmax(axis=-1)
    scores = classification_scores(labels, predictions, len(names))
    picked = probabilities[np.arange(len(labels)), labels]
    report = {
        "accuracy": scores["accuracy"],
        "macro_f1": scores["macro_f1"],
        "f1_per_class": dict(zip(names, scores["f1"], strict=True)),
        "loss": float(-np.mean(np.log(np.maximum(picked, 1e-300)))) if len(labels) else 0.0,
        "examples": int(len(labels)),
    }
    if len(names) == 2:
        report["f1"] = scores["f1"][1]
    return report


def _names(run: LoadedRun) -> list[str]:
    return list(run.config["model_config"]["class_names"])


def evaluate(run: LoadedRun, data: str | None = None, split: str = "validation",
             batch_size: int | None = None) -> dict:
    """Accuracy, macro F1, per-class F1, loss and the number of examples of a split."""
    source = data or run.config["data"]
    if data and data != run.config["data"] and not data.startswith("dataset:"):
        split = labelled.ALL  # another file: score all of it
    texts, labels = labelled.load_labelled(source, split)
    names = _names(run)
    y = labelled.label_ids(labels, names, source)
    x = encode(run.tokenizer, texts, int(run.config["seq_len"]))
    batch_size = batch_size or int(run.config["train"]["batch_size"])
    return scores_report(predict_probabilities(run.model, x, batch_size, progress.level()), y,
                         names)


def classify(run: LoadedRun, texts) -> list[dict] | dict:
    """``[{"label": str, "scores": {label: probability}}]`` per text (a str gives one dict)."""
    single = isinstance(texts, str)
    items = [texts] if single else list(texts)
    names = _names(run)
    x = encode(run.tokenizer, items, int(run.config["seq_len"]))
    probabilities = predict_probabilities(run.model, x, 64)
    results = [
        {"label": names[int(p.argmax())],
         "scores": {name: float(v) for name, v in zip(names, p, strict=True)}}
        for p in probabilities
    ]
    return results[0] if single else results


# ------------------------------------------------------------------------------------------------
# export


class _ServingModule(ExportModule):
    """The model's variables, the tokenizer, and the ``classify`` / ``predict`` functions."""

    def __init__(self, model, tokenizer, names: list[str], seq_len: int):
        super().__init__(model, name="zoo_classifier", tokenizers={"tokenizer": tokenizer})
        self._names = list(names)
        self._seq_len = int(seq_len)
        self.classify = self.function(self._classify,
                                      tf.TensorSpec([None], tf.string, name="inputs"))
        self.predict = self.function(self._predict, tf.TensorSpec([None], tf.string, name="text"))

    def _scores(self, text):
        ids = with_cls_sep(self.tokenizer.tokenize(text), self._seq_len)
        logits = tf.cast(self.keras_model(ids, training=False), tf.float32)
        scores = tf.nn.softmax(logits, axis=-1)  # (B, C)
        classes = tf.tile(tf.constant(self._names)[None, :], [tf.shape(scores)[0], 1])
        return scores, classes

    def _classify(self, inputs):
        features = tf.io.parse_example(
            inputs, {TEXT_FEATURE: tf.io.FixedLenFeature([], tf.string, default_value="")})
        scores, classes = self._scores(features[TEXT_FEATURE])
        return {"classes": classes, "scores": scores}

    def _predict(self, text):
        scores, classes = self._scores(text)
        label = tf.gather(tf.constant(self._names), tf.argmax(scores, axis=-1, output_type=tf.int32))
        return {"label": label, "scores": scores, "classes": classes}


def serving_module(run: LoadedRun, **_ignored):
    """``(module, signatures, settings)`` for ``export.saved_model`` (see the module docstring)."""
    from zoo.export_contract import CLASSIFY_METHOD

    module = _ServingModule(run.model, run.tokenizer, _names(run), int(run.config["seq_len"]))
    predict = module.predict.get_concrete_function()
    signatures = {"serving_default": predict, "predict": predict,
                  "classify": module.classify.get_concrete_function()}
    settings = {"classes": _names(run), "seq_len": int(run.config["seq_len"]),
                "text_feature": TEXT_FEATURE, "method_names": {"classify": CLASSIFY_METHOD}}
    return module, signatures, settings


def example_proto(text: str) -> bytes:
    """A serialized ``tf.Example`` with the bytes feature ``text`` (what ``classify`` reads)."""
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode("utf-8")]))
    return tf.train.Example(
        features=tf.train.Features(feature={TEXT_FEATURE: feature})).SerializeToString()


def warmup_records(run: LoadedRun) -> list[bytes]:
    """A ``predict`` PredictionLog and a ``classify`` one (two texts each)."""
    from tensorflow_serving.apis import classification_pb2, model_pb2, prediction_log_pb2

    texts = [run.tokenizer.decode(row) for row in sample_rows(run.tokenizer.vocab_size)]
    [predict_log] = predict_logs({"predict": {"text": text_array(texts)}})
    classify_request = classification_pb2.ClassificationRequest(
        model_spec=model_pb2.ModelSpec(signature_name="classify"))
    for text in texts:
        classify_request.input.example_list.examples.add().ParseFromString(example_proto(text))
    classify_log = prediction_log_pb2.PredictionLog(
        classify_log=prediction_log_pb2.ClassifyLog(request=classify_request))
    return [predict_log, classify_log.SerializeToString()]


# ------------------------------------------------------------------------------------------------
# the task


@register_task
class ClassificationTask(Task):
    """Text classification (``text_classifier``): one label per text.

    Trains on the mean cross-entropy of the softmax over the classes, ``z`` the logits of a
    text whose class is ``y``:

        L = -(1/N) sum_n log softmax(z_n)_{y_n}

    and reports accuracy, macro F1 and per-class F1 with it. Runs also answer ``classify``; the
    export has ``predict`` and TF Serving ``classify`` signatures.
    """

    name = "classification"
    # the module's functions are the task's methods
    train = staticmethod(train)
    evaluate = staticmethod(evaluate)
    serving_module = staticmethod(serving_module)

    def warmup_records(self, run: LoadedRun, **export_settings) -> list[bytes]:
        """A ``predict`` and a ``classify`` request, two texts each."""
        return warmup_records(run)

    classify = staticmethod(classify)
