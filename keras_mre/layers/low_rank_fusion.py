"""Low-rank multimodal fusion (eq 1-2)."""

import keras
from keras import ops

from keras_mre.errors import ConfigError


@keras.saving.register_keras_serializable(package="keras_mre")
class LowRankFusion(keras.layers.Layer):
    """Low-rank tensor fusion of any number `M >= 2` of modality vectors.

    Eq 1-2 of the paper (low-rank multimodal fusion). Each input `s_m`
    `[batch, d_m]` gets a constant 1 appended, `z_m = [s_m, 1]`, and is
    projected by its rank-`R` fusion factor `W_m` `[R, d_m + 1, units]`.
    The rank-`r` slices are multiplied across modalities (the low-rank form
    of the outer-product tensor of eq 1) and combined by the fusion weights
    `w` `[R]` plus the bias `b` `[units]` (eq 2):

        F = sum_r w_r prod_m (z_m W_m^(r)) + b

    The factors, the fusion weights and the bias are all trainable.

    Initialisation: the factor rows that multiply the appended 1 start at 1
    and the feature rows are Glorot-uniform, so at the start each product is
    `1 + (small terms)`: the fused output starts close to a sum of
    per-modality linear terms instead of a vanishing product of small
    numbers, which keeps early gradients alive for every modality.

    Args:
        units: output width (the class count when used as the classifier).
        rank: rank `R` of the fusion.

    Call arguments:
        inputs: a list of `M` tensors `[batch, d_m]` (widths may differ), or
            one stacked tensor `[batch, M, d]`.

    Returns:
        `[batch, units]`.
    """

    def __init__(self, units, rank=4, **kwargs):
        super().__init__(**kwargs)
        if units <= 0:
            raise ConfigError(f"units={units!r}: expected a positive integer")
        if rank <= 0:
            raise ConfigError(f"rank={rank!r}: expected a positive integer")
        self.units = units
        self.rank = rank

    @staticmethod
    def _is_list_of_shapes(input_shape):
        return isinstance(input_shape, (list, tuple)) and isinstance(
            input_shape[0], (list, tuple)
        )

    def build(self, input_shape):
        if self._is_list_of_shapes(input_shape):
            widths = [tuple(shape)[-1] for shape in input_shape]
        else:
            _, modalities, width = tuple(input_shape)
            widths = [width] * modalities
        if len(widths) < 2:
            raise ConfigError(
                f"LowRankFusion inputs: {len(widths)} modality; expected at least 2"
            )
        rank, units = self.rank, self.units

        def factor_initializer(width):
            glorot = keras.initializers.GlorotUniform()

            def initialize(shape, dtype=None):
                features = glorot((rank, width, units), dtype=dtype)
                constant = ops.ones((rank, 1, units), dtype=dtype)
                return ops.concatenate([features, constant], axis=1)

            return initialize

        self.factors = [
            self.add_weight(
                name=f"factor_{i}",
                shape=(rank, width + 1, units),
                initializer=factor_initializer(width),
            )
            for i, width in enumerate(widths)
        ]
        self.fusion_weights = self.add_weight(
            name="fusion_weights", shape=(rank,), initializer="glorot_uniform"
        )
        self.bias = self.add_weight(
            name="bias", shape=(units,), initializer="zeros"
        )

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            vectors = list(inputs)
        else:
            vectors = [inputs[:, i, :] for i in range(inputs.shape[1])]
        fused = None
        for vector, factor in zip(vectors, self.factors):
            width = vector.shape[-1]
            # [batch, d_m] x [d_m, R * units] plus the constant row.
            kernel = ops.reshape(
                ops.transpose(factor[:, :width, :], (1, 0, 2)),
                (width, self.rank * self.units),
            )
            constant = ops.reshape(factor[:, width, :], (self.rank * self.units,))
            projected = ops.matmul(vector, kernel) + constant
            fused = projected if fused is None else fused * projected
        fused = ops.reshape(fused, (-1, self.rank, self.units))
        # sum_r w_r f_r; a product and a sum ran faster than TensorFlow's
        # CPU einsum of this shape, forward and gradient.
        weighted = fused * self.fusion_weights[None, :, None]
        return ops.sum(weighted, axis=1) + self.bias

    def compute_output_shape(self, input_shape):
        if self._is_list_of_shapes(input_shape):
            return (tuple(input_shape[0])[0], self.units)
        return (tuple(input_shape)[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, "rank": self.rank})
        return config
