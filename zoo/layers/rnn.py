"""Stacked recurrent layers (SimpleRNN / LSTM / GRU) with explicit, flat state in and out."""

from __future__ import annotations

import keras
from keras import ops

from zoo.layers.attention import _check_positive_int, _check_rate

_CELLS = {
    "simple": keras.layers.SimpleRNN,
    "lstm": keras.layers.LSTM,
    "gru": keras.layers.GRU,
}
_STATES_PER_LAYER = {"simple": 1, "lstm": 2, "gru": 1}


@keras.saving.register_keras_serializable(package="zoo")
class RNNStack(keras.layers.Layer):
    """``num_layers`` stacked recurrent layers with dropout between them.

    Layer ``l`` maps the sequence ``x^(l-1)`` to ``x^(l)`` with its recurrence, e.g. for
    ``cell="simple"``: ``h_t = tanh(x_t W + h_{t-1} U + b)``; LSTM and GRU follow Keras
    (Hochreiter & Schmidhuber 1997; Cho et al. 2014, ``reset_after=True``). Between layers
    (not after the last one) ``x^(l) <- Dropout(x^(l))`` during training; there is no recurrent
    dropout, so the Keras defaults keep the cuDNN kernels usable on GPU.

    States are a FLAT list in layer order: ``[h_1, h_2, ...]`` for simple/GRU,
    ``[h_1, c_1, h_2, c_2, ...]`` for LSTM, each ``(B, units)``. Running a sequence in chunks
    (e.g. one token at a time) while carrying the states gives the same outputs as one pass.

    Args:
        cell: ``"simple"``, ``"lstm"`` or ``"gru"`` (case-insensitive).
        units: Hidden width of every layer.
        num_layers: Number of stacked layers.
        dropout: Dropout rate between layers.
        **kwargs: Base ``keras.layers.Layer`` arguments.
    """

    def __init__(self, cell: str, units: int, num_layers: int = 1, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        kind = cell.lower() if isinstance(cell, str) else cell
        if kind not in _CELLS:
            raise ValueError(f"cell must be one of {tuple(_CELLS)}. Received: cell={cell!r}")
        _check_positive_int("units", units)
        _check_positive_int("num_layers", num_layers)
        _check_rate("dropout", dropout)
        self.cell = kind
        self.units = units
        self.num_layers = num_layers
        self.dropout = dropout
        self.states_per_layer = _STATES_PER_LAYER[kind]
        layer_cls = _CELLS[kind]
        self.rnn_layers = [
            layer_cls(
                units,
                return_sequences=True,
                return_state=True,
                dtype=self.dtype_policy,
                name=f"{kind}_{i}",
            )
            for i in range(num_layers)
        ]
        self.dropout_layers = [
            keras.layers.Dropout(dropout, dtype=self.dtype_policy, name=f"dropout_{i}")
            for i in range(num_layers - 1)
        ]

    @property
    def num_states(self) -> int:
        """Length of the flat state list."""
        return self.num_layers * self.states_per_layer

    def build(self, input_shape):
        shape = tuple(input_shape)
        for i, layer in enumerate(self.rnn_layers):
            layer.build(shape)
            shape = shape[:-1] + (self.units,)
            if i < len(self.dropout_layers):
                self.dropout_layers[i].build(shape)

    def get_initial_state(self, batch_size, dtype: str | None = None) -> list:
        """Flat list of all-zero states ``(batch_size, units)``, in the order ``call`` uses."""
        return [
            ops.zeros((batch_size, self.units), dtype=dtype or self.compute_dtype)
            for _ in range(self.num_states)
        ]

    def call(
        self,
        inputs,
        initial_state: list | None = None,
        return_state: bool = False,
        training: bool | None = None,
    ):
        """Run the stack on ``inputs`` (B, T, d).

        Args:
            inputs: ``(B, T, d)`` float sequence.
            initial_state: Optional flat list of ``num_states`` tensors ``(B, units)``
                (``None`` = zeros).
            return_state: Also return the final states.
            training: Enables dropout between layers.

        Returns:
            ``(B, T, units)``, or ``(sequences, states)`` with ``return_state=True`` where
            ``states`` is the flat list of final states.
        """
        if initial_state is not None:
            initial_state = list(initial_state)
            if len(initial_state) != self.num_states:
                raise ValueError(
                    f"initial_state must be a flat list of {self.num_states} tensors "
                    f"({self.num_layers} {self.cell} layer(s)). "
                    f"Received: {len(initial_state)} tensors"
                )
        x = inputs  # (B, T, d)
        final_states = []
        n = self.states_per_layer
        for i, layer in enumerate(self.rnn_layers):
            state = None if initial_state is None else initial_state[i * n : (i + 1) * n]
            x, *states = layer(x, initial_state=state, training=training)  # x: (B, T, units)
            final_states.extend(states)  # each (B, units)
            if i < len(self.dropout_layers):
                x = self.dropout_layers[i](x, training=training)
        if return_state:
            return x, final_states
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def compute_output_spec(self, inputs, initial_state=None, return_state=False, training=None):
        output = keras.KerasTensor(self.compute_output_shape(inputs.shape), self.compute_dtype)
        if not return_state:
            return output
        state_shape = (inputs.shape[0], self.units)
        states = [
            keras.KerasTensor(state_shape, self.compute_dtype) for _ in range(self.num_states)
        ]
        return output, states

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "cell": self.cell,
                "units": self.units,
                "num_layers": self.num_layers,
                "dropout": self.dropout,
            }
        )
        return config
