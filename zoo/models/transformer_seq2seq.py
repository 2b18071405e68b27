"""``transformer_seq2seq``: the encoder-decoder Transformer of Vaswani et al. (2017).

    m   = Encoder(x)       h_0 = E_src[x]·√d + PE,   h_l = TransformerBlock_l(h_{l-1}, pad mask)
    s_0 = E_tgt[y_<t]·√d + PE
    s_l = DecoderBlock_l(s_{l-1}, m)   causal self-attention, cross-attention over m, FFN
    p(y_t | y_<t, x) = softmax(s_N · E_tgt^T)   (tied)   or   softmax(s_N · W_out + b)

Source and target have separate vocabularies (``source_vocab_size`` and the model's
``vocab_size``). Source padding (id 0) is masked in the encoder's self-attention and in every
cross-attention. Decoding keeps, per decoder block, a self-attention cache written one position
at a time and the cross-attention keys/values of the encoder output, computed once per source
(see ``zoo.tasks.seq2seq`` for the greedy and beam loops).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
from keras import ops

from zoo.layers import TokenAndPositionEmbedding, TransformerBlock, TransformerDecoderBlock
from zoo.models.registry import ModelSpec, register
from zoo.special_tokens import BOS_ID, EOS_ID, NUM_SPECIAL, PAD_ID


@dataclass(frozen=True)
class TransformerSeq2SeqConfig:
    """Sizes of an encoder-decoder Transformer (``source_vocab_size`` 0: the target's)."""

    num_encoder_layers: int = 3
    num_decoder_layers: int = 3
    num_heads: int = 4
    d_model: int = 256
    ffn_dim: int = 1024
    max_source_length: int = 64
    max_target_length: int = 64  # target positions: <bos> + tokens, the decoding bound
    dropout: float = 0.1
    activation: str = "relu"
    norm_first: bool = False  # the paper's post-norm; True = pre-norm
    position: str = "sinusoidal"  # or "learned"
    tie_embeddings: bool = True  # decoder output projection = target embedding^T
    source_vocab_size: int = 0
    layer_norm_epsilon: float = 1e-5

    def __post_init__(self):
        for field in ("num_encoder_layers", "num_decoder_layers", "num_heads", "d_model",
                      "ffn_dim", "max_source_length"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be >= 1. Received: {getattr(self, field)}")
        if self.max_target_length < 2:
            raise ValueError(f"max_target_length must be >= 2. Received: {self.max_target_length}")
        if self.d_model % self.num_heads:
            raise ValueError(
                "d_model must be divisible by num_heads. "
                f"Received: d_model={self.d_model}, num_heads={self.num_heads}"
            )
        if self.position not in ("learned", "sinusoidal"):
            raise ValueError(f"position must be learned or sinusoidal. Received: {self.position!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: {self.dropout}")
        if self.source_vocab_size != 0 and self.source_vocab_size < NUM_SPECIAL + 1:
            raise ValueError(
                f"source_vocab_size must be 0 (the target's) or >= {NUM_SPECIAL + 1}. Received: "
                f"{self.source_vocab_size}"
            )


@keras.saving.register_keras_serializable(package="zoo")
class TransformerSeq2Seq(keras.Model):
    """Encoder-decoder Transformer: ``model((source_ids, target_in))`` -> logits ``(B, T, V)``.

    ``source_ids`` (B, S) and ``target_in`` (B, T) are int ids right-padded with 0; the logits
    are float32 over the target vocabulary, position t predicting the token after ``target_in[:, t]``.

    Args:
        vocab_size: target vocabulary size.
        source_vocab_size: source vocabulary size (0: ``vocab_size``).
        Other arguments: see ``TransformerSeq2SeqConfig``.
    """

    # XLA speeds this model's training step up on a CPU (zoo.fitting picks jit_compile by it)
    xla_on_cpu = True

    def __init__(
        self,
        vocab_size: int,
        num_encoder_layers: int = 3,
        num_decoder_layers: int = 3,
        num_heads: int = 4,
        d_model: int = 256,
        ffn_dim: int = 1024,
        max_source_length: int = 64,
        max_target_length: int = 64,
        dropout: float = 0.1,
        activation: str = "relu",
        norm_first: bool = False,
        position: str = "sinusoidal",
        tie_embeddings: bool = True,
        source_vocab_size: int = 0,
        layer_norm_epsilon: float = 1e-5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.source_vocab_size = source_vocab_size or vocab_size
        self.num_encoder_layers = num_encoder_layers
        self.num_decoder_layers = num_decoder_layers
        self.num_heads = num_heads
        self.d_model = d_model
        self.ffn_dim = ffn_dim
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self.dropout = dropout
        self.activation = activation
        self.norm_first = norm_first
        self.position = position
        self.tie_embeddings = tie_embeddings
        self.layer_norm_epsilon = layer_norm_epsilon
        self.head_dim = d_model // num_heads
        policy = self.dtype_policy

        def embedding(vocab: int, length: int, name: str) -> TokenAndPositionEmbedding:
            # the paper: embeddings scaled by sqrt(d_model), initialised N(0, d_model^-1/2)
            return TokenAndPositionEmbedding(
                vocab_size=vocab, max_length=length, embedding_dim=d_model, position=position,
                embeddings_initializer=keras.initializers.RandomNormal(stddev=d_model**-0.5),
                scale_embeddings=True, name=name, dtype=policy,
            )

        self.source_embedding = embedding(self.source_vocab_size, max_source_length,
                                          "source_embedding")
        self.target_embedding = embedding(vocab_size, max_target_length, "target_embedding")
        self.source_dropout = keras.layers.Dropout(dropout, dtype=policy)
        self.target_dropout = keras.layers.Dropout(dropout, dtype=policy)
        self.encoder_blocks = [
            TransformerBlock(
                d_model=d_model, num_heads=num_heads, ffn_dim=ffn_dim, rate=dropout,
                activation=activation, norm_first=norm_first, causal=False,
                layer_norm_epsilon=layer_norm_epsilon, name=f"encoder_{i}", dtype=policy,
            )
            for i in range(num_encoder_layers)
        ]
        self.decoder_blocks = [
            TransformerDecoderBlock(
                d_model=d_model, num_heads=num_heads, ffn_dim=ffn_dim, rate=dropout,
                activation=activation, norm_first=norm_first,
                layer_norm_epsilon=layer_norm_epsilon, name=f"decoder_{i}", dtype=policy,
            )
            for i in range(num_decoder_layers)
        ]
        # pre-norm stacks end with a LayerNorm; post-norm blocks already end normalised
        self.encoder_norm = self.decoder_norm = None
        if norm_first:
            self.encoder_norm = keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, name="encoder_norm", dtype=policy)
            self.decoder_norm = keras.layers.LayerNormalization(
                epsilon=layer_norm_epsilon, name="decoder_norm", dtype=policy)
        self.lm_head = (
            None if tie_embeddings
            else keras.layers.Dense(vocab_size, dtype="float32", name="lm_head")
        )
        self((ops.zeros((1, 2), "int32"), ops.zeros((1, 2), "int32")))  # create the weights

    def token_embedding_layer(self) -> keras.layers.Embedding:
        """The decoder's ``(vocab_size, d_model)`` target-token embedding (also the output
        projection when tied): the table of the run's (target) tokenizer
        (``zoo.pretrained_vectors``)."""
        return self.target_embedding.token_embedding

    def source_token_embedding_layer(self) -> keras.layers.Embedding:
        """The encoder's ``(source_vocab_size, d_model)`` source-token embedding: the table of
        the source tokenizer (``zoo.pretrained_vectors``)."""
        return self.source_embedding.token_embedding

    # -- the two halves ------------------------------------------------------------------------

    def encode(self, source_ids, training=None):
        """Source ids ``(B, S)`` -> ``(memory (B, S, d), source_mask (B, S) bool)``."""
        source_ids = ops.cast(source_ids, "int32")
        mask = ops.not_equal(source_ids, PAD_ID)
        h = self.source_dropout(self.source_embedding(source_ids), training=training)
        for block in self.encoder_blocks:
            h = block(h, padding_mask=mask, training=training)
        if self.encoder_norm is not None:
            h = self.encoder_norm(h)
        return h, mask

    def _project(self, h):
        """(B, T, d) decoder states -> (B, T, V) float32 logits."""
        if self.decoder_norm is not None:
            h = self.decoder_norm(h)
        if self.lm_head is not None:
            return self.lm_head(h)
        return self.target_embedding.compute_logits(h)

    def decode(self, target_ids, memory, source_mask, training=None):
        """Teacher-forced decoder: target ids ``(B, T)`` over ``memory`` -> logits ``(B, T, V)``."""
        h = self.target_dropout(self.target_embedding(ops.cast(target_ids, "int32")),
                                training=training)
        for block in self.decoder_blocks:
            h = block(h, memory, memory_mask=source_mask, training=training)
        return self._project(h)

    def call(self, inputs, training=None):
        source_ids, target_ids = inputs
        memory, mask = self.encode(source_ids, training=training)
        return self.decode(target_ids, memory, mask, training=training)

    # -- incremental decoding ------------------------------------------------------------------

    def cross_caches(self, memory):
        """Per decoder block, the cross-attention keys/values ``(B, 2, S, H, D)`` of ``memory``."""
        return tuple(block.compute_cross_cache(memory) for block in self.decoder_blocks)

    def init_decoder_cache(self, batch_size, max_length=None):
        """Per decoder block, an empty self-attention cache ``(B, 2, L, H, D)``."""
        length = self.max_target_length if max_length is None else max_length
        return tuple(block.init_cache(batch_size, length) for block in self.decoder_blocks)

    def decode_step(self, target_ids, self_caches, cross_caches, source_mask, index):
        """Run target ids ``(B, n)`` at positions ``index..index+n-1`` with the caches.

        Returns ``(logits (B, n, V), new self_caches)``; equal to ``decode`` of the whole prefix
        at those positions.
        """
        index = ops.cast(index, "int32")
        h = self.target_embedding(ops.cast(target_ids, "int32"), start_index=index)
        new_caches = []
        for block, cache, cross in zip(self.decoder_blocks, self_caches, cross_caches,
                                       strict=True):
            h, cache = block(h, memory_mask=source_mask, cache=cache, cache_update_index=index,
                             cross_cache=cross)
            new_caches.append(cache)
        return self._project(h), tuple(new_caches)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            source_vocab_size=self.source_vocab_size,
            num_encoder_layers=self.num_encoder_layers,
            num_decoder_layers=self.num_decoder_layers,
            num_heads=self.num_heads,
            d_model=self.d_model,
            ffn_dim=self.ffn_dim,
            max_source_length=self.max_source_length,
            max_target_length=self.max_target_length,
            dropout=self.dropout,
            activation=self.activation,
            norm_first=self.norm_first,
            position=self.position,
            tie_embeddings=self.tie_embeddings,
            layer_norm_epsilon=self.layer_norm_epsilon,
        )
        return config


# --------------------------------------------------------------------------------------------------
# Decoding: the zoo's greedy / beam loops (zoo.generation.decode) over a causal-LM view of the
# decoder for one batch of sources. The prompt is <bos>; <eos> stops a row.
# --------------------------------------------------------------------------------------------------


class _CachedDecoder:
    """The decoder as a ``CausalLM`` (``init_cache`` / ``call_with_cache``) for encoded sources.

    Its cache is ``(self-attention caches, cross-attention keys/values, source mask)``: every
    leaf has the batch on axis 0, so beam search can repeat and reorder it; the cross-attention
    keys/values are computed once per source, here.
    """

    built = True

    def __init__(self, model: TransformerSeq2Seq, source_ids):
        self.model = model
        self.max_length = model.max_target_length
        memory, self.source_mask = model.encode(source_ids, training=False)
        self.cross = model.cross_caches(memory)

    def init_cache(self, batch_size, max_length):
        return self.model.init_decoder_cache(batch_size, max_length), self.cross, self.source_mask

    def call_with_cache(self, token_ids, cache, index):
        self_caches, cross, mask = cache
        logits, self_caches = self.model.decode_step(token_ids, self_caches, cross, mask, index)
        return logits, (self_caches, cross, mask)


def _uncached_decoder(model: TransformerSeq2Seq, source_ids):
    """The reference: every call runs the encoder and the whole decoder on the token history
    (``zoo.generation.loop.UncachedView`` with the source ids as per-row context)."""
    from zoo.generation.loop import UncachedView

    return UncachedView(lambda buffer, source: model((source, buffer), training=False),
                        context=(ops.cast(source_ids, "int32"),),
                        max_length=model.max_target_length)


def translate_ids(model: TransformerSeq2Seq, source_ids, *, strategy: str = "greedy",
                  num_beams: int = 4, max_new_tokens: int | None = None,
                  length_penalty: float = 1.0, cached: bool = True):
    """Translate source ids ``(B, S)`` (right-padded with 0, ending with <eos>) inside a graph.

    Returns ``(target_ids (B, N), num_tokens (B,))``, the ids padded with 0 after ``num_tokens``;
    ``N = max_new_tokens`` (default and upper bound: ``max_target_length - 1``, the static bound
    of the loop). A row stops at <eos> (not returned). ``strategy="beam"`` keeps ``num_beams``
    hypotheses scored by ``sum log p / length ** length_penalty`` (length counting <eos>).
    ``cached=False`` decodes with the uncached reference (same loop, everything recomputed).
    Call it inside a ``tf.function`` (it runs the loops as plain graph ops, without XLA).
    """
    from zoo.generation.decode import beam_search_ids, generate_ids

    bound = model.max_target_length - 1
    max_new = bound if max_new_tokens is None else min(int(max_new_tokens), bound)
    view = (_CachedDecoder if cached else _uncached_decoder)(model, source_ids)
    batch = ops.shape(source_ids)[0]
    prompt = ops.full((batch, 1), BOS_ID, dtype="int32")
    lengths = ops.ones((batch,), "int32")
    if strategy == "beam":
        return beam_search_ids(view, prompt, lengths, max_new, num_beams,
                               length_penalty=length_penalty, stop_token_ids=(EOS_ID,),
                               jit_compile=False, prefill_length=1)
    return generate_ids(view, prompt, lengths, max_new, stop_token_ids=(EOS_ID,),
                        jit_compile=False, prefill_length=1)


def _build(vocab_size: int, config: TransformerSeq2SeqConfig) -> TransformerSeq2Seq:
    return TransformerSeq2Seq(vocab_size=vocab_size, **asdict(config))


register(
    ModelSpec(
        name="transformer_seq2seq",
        description="Encoder-decoder Transformer for translation (Vaswani et al., 2017)",
        config_class=TransformerSeq2SeqConfig,
        presets={
            "tiny": dict(num_encoder_layers=2, num_decoder_layers=2, num_heads=2, d_model=32,
                         ffn_dim=64, max_source_length=32, max_target_length=32, dropout=0.0),
            # trains on Multi30k on 2 CPU cores in minutes
            "small": dict(num_encoder_layers=3, num_decoder_layers=3, num_heads=4, d_model=128,
                          ffn_dim=512, max_source_length=64, max_target_length=64, dropout=0.1),
            # the paper's base model (65M parameters with a 37k shared vocabulary)
            "base": dict(num_encoder_layers=6, num_decoder_layers=6, num_heads=8, d_model=512,
                         ffn_dim=2048, max_source_length=128, max_target_length=128, dropout=0.1),
        },
        builder=_build,
        task="seq2seq",
    )
)
