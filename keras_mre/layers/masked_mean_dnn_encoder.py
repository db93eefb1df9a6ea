"""Frame-mean encoder: masked mean over valid frames, then a DNN."""

import keras
from keras import ops

from keras_mre.errors import ConfigError


def length_mask(lengths, max_length, dtype):
    """`[batch, max_length]` mask, 1 on the first `lengths[b]` frames."""
    positions = ops.arange(max_length, dtype="int32")
    lengths = ops.cast(lengths, "int32")
    return ops.cast(positions[None, :] < lengths[:, None], dtype)


@keras.saving.register_keras_serializable(package="keras_mre")
class MaskedMeanDNNEncoder(keras.layers.Layer):
    """Mean over the valid frames of a clip followed by a `num_layers` DNN.

    The audio and vision encoder of the paper (section 3.1 and the
    `1/N sum_k x_k` of eq 4): emotions are taken as constant over a clip, so
    its frames are averaged, then a DNN maps the mean to the common width.

    The mean is one batched matrix product of the frame tensor with the
    length mask, so padding frames (zeros or anything finite) change nothing
    and no per-step work is done. A clip with zero valid frames averages to
    the zero vector, which gives finite outputs.

    The pooled vector is layer-normalised (features of a modality differ in
    scale by orders of magnitude, e.g. MFCC against zero-crossing rate), then
    passes `num_layers` dense layers of width `units`: ReLU on the hidden
    ones, `tanh` on the last so that every modality token of the relevance
    attention lies in the same range as an LSTM output.

    Args:
        units: output width `d`.
        num_layers: number of dense layers (paper: 3).
        dropout: dropout rate after each hidden dense layer.
        normalize: apply layer normalisation to the pooled frames.

    Call arguments:
        inputs: frames `[batch, time, features]`.
        lengths: valid frame counts `[batch]` (int). `None` means all frames
            are valid. Counts above `time` count as `time`.
        training: dropout switch.

    Returns:
        `[batch, units]`.
    """

    def __init__(self, units, num_layers=3, dropout=0.0, normalize=True, **kwargs):
        super().__init__(**kwargs)
        if units <= 0:
            raise ConfigError(f"units={units!r}: expected a positive integer")
        if num_layers <= 0:
            raise ConfigError(
                f"num_layers={num_layers!r}: expected a positive integer"
            )
        self.units = units
        self.num_layers = num_layers
        self.dropout = dropout
        self.normalize = normalize
        self.norm = (
            keras.layers.LayerNormalization(name="norm", dtype=self.dtype_policy)
            if normalize
            else None
        )
        self.dense_layers = [
            keras.layers.Dense(
                units,
                activation="tanh" if i == num_layers - 1 else "relu",
                name=f"dense_{i}",
                dtype=self.dtype_policy,
            )
            for i in range(num_layers)
        ]
        self.dropout_layer = keras.layers.Dropout(dropout, name="dropout")

    def build(self, inputs_shape, lengths_shape=None):
        features = inputs_shape[-1]
        if self.norm is not None:
            self.norm.build((None, features))
        width = features
        for layer in self.dense_layers:
            layer.build((None, width))
            width = self.units

    def masked_mean(self, inputs, lengths=None):
        """Mean over valid frames, `[batch, features]`; 0 for empty clips."""
        if lengths is None:
            return ops.mean(inputs, axis=1)
        mask = length_mask(lengths, ops.shape(inputs)[1], inputs.dtype)
        total = ops.squeeze(ops.matmul(mask[:, None, :], inputs), axis=1)
        count = ops.maximum(ops.sum(mask, axis=1, keepdims=True), 1.0)
        return total / count

    def call(self, inputs, lengths=None, training=None):
        x = self.masked_mean(inputs, lengths)
        if self.norm is not None:
            x = self.norm(x)
        for i, layer in enumerate(self.dense_layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = self.dropout_layer(x, training=training)
        return x

    def compute_output_shape(self, inputs_shape, lengths_shape=None):
        return (inputs_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "num_layers": self.num_layers,
                "dropout": self.dropout,
                "normalize": self.normalize,
            }
        )
        return config
