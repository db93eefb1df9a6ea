"""LSTM encoder over token or frame features with per-clip lengths."""

import keras
from keras import ops

from keras_mre.errors import ConfigError
from keras_mre.layers.masked_mean_dnn_encoder import length_mask


@keras.saving.register_keras_serializable(package="keras_mre")
class LSTMEncoder(keras.layers.Layer):
    """A single-layer LSTM returning the state after each clip's last valid step.

    The text encoder of the paper (section 3.1). The input projection of all
    four gates, `x_t W + b`, is computed for every time step at once as one
    large matrix product `[batch * time, features] x [features, 4 * units]`;
    only the recurrent product `h_{t-1} U` runs step by step. Steps past a
    clip's length leave the state unchanged, so padding changes nothing and a
    clip with zero valid steps returns the zero vector.

    Gates follow the usual LSTM equations (input, forget, candidate, output
    order; forget-gate bias initialised to 1):

        i, f, g, o = split(x_t W + b + h_{t-1} U)
        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)

    Args:
        units: output width `d` (the hidden state size).
        dropout: dropout rate on the returned state.

    Call arguments:
        inputs: `[batch, time, features]`.
        lengths: valid step counts `[batch]` (int); `None` means all valid.
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
        self.dropout_layer = keras.layers.Dropout(dropout, name="dropout")

    def build(self, inputs_shape, lengths_shape=None):
        features = inputs_shape[-1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=(features, 4 * self.units),
            initializer="glorot_uniform",
        )
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel",
            shape=(self.units, 4 * self.units),
            initializer="orthogonal",
        )

        def bias_initializer(shape, dtype=None):
            bias = ops.zeros((4, self.units), dtype=dtype)
            bias = ops.concatenate(
                [bias[:1], ops.ones((1, self.units), dtype=dtype), bias[2:]]
            )
            return ops.reshape(bias, shape)

        self.bias = self.add_weight(
            name="bias", shape=(4 * self.units,), initializer=bias_initializer
        )

    def call(self, inputs, lengths=None, training=None):
        batch = ops.shape(inputs)[0]
        steps = ops.shape(inputs)[1]
        # One matrix product for the input part of every gate at every step.
        gates = ops.matmul(inputs, self.kernel) + self.bias
        gates = ops.transpose(gates, (1, 0, 2))
        if lengths is None:
            lengths = ops.full((batch,), steps, dtype="int32")
        mask = ops.transpose(length_mask(lengths, steps, "bool"))[:, :, None]
        recurrent_kernel = ops.convert_to_tensor(self.recurrent_kernel)
        units = self.units

        def step(t, carry):
            h, c = carry
            z = gates[t] + ops.matmul(h, recurrent_kernel)
            i = ops.sigmoid(z[:, :units])
            f = ops.sigmoid(z[:, units : 2 * units])
            g = ops.tanh(z[:, 2 * units : 3 * units])
            o = ops.sigmoid(z[:, 3 * units :])
            c_new = f * c + i * g
            h_new = o * ops.tanh(c_new)
            return ops.where(mask[t], h_new, h), ops.where(mask[t], c_new, c)

        zeros = ops.zeros((batch, units), dtype=gates.dtype)
        h, _ = ops.fori_loop(0, steps, step, (zeros, zeros))
        return self.dropout_layer(h, training=training)

    def compute_output_shape(self, inputs_shape, lengths_shape=None):
        return (inputs_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "dropout": self.dropout})
        return config
