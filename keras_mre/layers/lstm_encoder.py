"""LSTM encoder over token or frame features with per-clip lengths."""

import keras
from keras import ops

from keras_mre.errors import ConfigError


class _ProjectedLSTMCell(keras.layers.Layer):
    """LSTM step on pre-projected gates, also picking each clip's last state.

    Step input: `[batch, 4 * units + 1]`, the gates' input part `x_t W + b`
    (order input, forget, output, candidate) and a last column that is 1 at
    the clip's last valid step. States: `h`, `c` and `picked`, the sum of
    `h_t` weighted by that column, i.e. the state after the last valid step.
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = [units, units, units]
        self.output_size = units

    def build(self, input_shape):
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel",
            shape=(self.units, 4 * self.units),
            initializer="orthogonal",
        )

    def call(self, inputs, states, training=None):
        h, c, picked = states
        units = self.units
        z = inputs[:, : 4 * units] + ops.matmul(h, self.recurrent_kernel)
        gates = ops.sigmoid(z[:, : 3 * units])
        candidate = ops.tanh(z[:, 3 * units :])
        c = gates[:, units : 2 * units] * c + gates[:, :units] * candidate
        h = gates[:, 2 * units :] * ops.tanh(c)
        picked = picked + inputs[:, 4 * units :] * h
        return picked, [h, c, picked]

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config


@keras.saving.register_keras_serializable(package="keras_mre")
class LSTMEncoder(keras.layers.Layer):
    """A single-layer LSTM returning the state after each clip's last valid step.

    The text encoder of the paper (section 3.1). The input projection of all
    four gates, `x_t W + b`, is computed for every time step at once as one
    2-D matrix product `[batch * time, features] x [features, 4 * units]`
    (most of an LSTM's work at BERT widths); only the recurrent product
    `h_{t-1} U` runs step by step, in Keras' RNN loop.

    The state after step `length - 1` is picked up inside the loop, so steps
    after a clip's end never affect the output: padding changes nothing
    without any per-step masking, and a clip with zero valid steps returns
    the zero vector. (The LSTM is causal, so running over padding afterwards
    is harmless.) A time axis of 0 steps is allowed and also gives zeros.

    Gates (order input, forget, output, candidate; forget-gate bias
    initialised to 1):

        i, f, o, g = split(x_t W + b + h_{t-1} U)
        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)

    Args:
        units: output width `d` (the hidden state size).
        dropout: dropout rate on the returned state.

    Call arguments:
        inputs: `[batch, time, features]`.
        lengths: valid step counts `[batch]` (int); `None` means all valid.
            Counts above `time` count as `time`.
        training: dropout switch.

    Returns:
        The hidden state after the last valid step, `[batch, units]`.
    """

    def __init__(self, units, dropout=0.0, **kwargs):
        super().__init__(**kwargs)
        if units <= 0:
            raise ConfigError(f"units={units!r}: expected a positive integer")
        self.units = units
        self.dropout = dropout
        self.cell = _ProjectedLSTMCell(units, name="cell", dtype=self.dtype_policy)
        self.rnn = keras.layers.RNN(self.cell, name="rnn", dtype=self.dtype_policy)
        self.dropout_layer = keras.layers.Dropout(dropout, name="dropout")

    def build(self, inputs_shape, lengths_shape=None):
        features = inputs_shape[-1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=(features, 4 * self.units),
            initializer="glorot_uniform",
        )
        units = self.units

        def bias_initializer(shape, dtype=None):
            forget = ops.concatenate(
                [ops.zeros((units,)), ops.ones((units,)), ops.zeros((2 * units,))]
            )
            return ops.cast(forget, dtype)

        self.bias = self.add_weight(
            name="bias", shape=(4 * units,), initializer=bias_initializer
        )
        self.rnn.build((None, None, 4 * units + 1))

    def call(self, inputs, lengths=None, training=None):
        units = self.units
        batch = ops.shape(inputs)[0]
        steps = ops.shape(inputs)[1]
        if lengths is None:
            lengths = ops.full((batch,), steps, dtype="int32")
        lengths = ops.minimum(ops.cast(lengths, "int32"), steps)
        # One 2-D product for every step (a 3-D x 2-D product would run as a
        # broadcast batch product, whose kernel gradient is far slower).
        gates = ops.matmul(ops.reshape(inputs, (-1, inputs.shape[-1])), self.kernel)
        gates = ops.reshape(gates + self.bias, (batch, steps, 4 * units))
        last = ops.arange(steps, dtype="int32")[None, :] == lengths[:, None] - 1
        gates = ops.concatenate([gates, ops.cast(last, gates.dtype)[:, :, None]], -1)
        # A time axis of 0 steps gets one all-zero step (never picked), so
        # the loop always runs and the output is the zero vector.
        empty = ops.cast(ops.equal(steps, 0), "int32")
        gates = ops.pad(gates, [[0, 0], [0, empty], [0, 0]])
        return self.dropout_layer(self.rnn(gates), training=training)

    def compute_output_shape(self, inputs_shape, lengths_shape=None):
        return (inputs_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "dropout": self.dropout})
        return config
