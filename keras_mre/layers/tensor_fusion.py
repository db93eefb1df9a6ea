"""Tensor fusion: the outer product of unimodal vectors, each extended by 1."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mre")
class TensorFusion(keras.layers.Layer):
    """Outer product of unimodal embeddings, each extended by a constant 1.

    Tensor Fusion Network (Zadeh et al. 2017, eq 1): with `z_m` the embedding
    of modality `m`, the fused tensor is `[1; z_1] ⊗ [1; z_2] ⊗ ... ⊗ [1; z_M]`.
    The extra 1 keeps every unimodal and every bimodal interaction inside
    the product. The paper writes it after `z_m`; here it comes first, as in
    MMSA's TFN, which only permutes the entries of the flattened tensor. The
    tensor is returned flattened, with the last modality's index varying
    fastest: entry 0 is the constant 1, entries `1..dim_M` are `z_M`.

    Args:
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: list of `M` tensors, the m-th of shape `[batch, dim_m]`.

    Returns:
        `[batch, prod_m (dim_m + 1)]`.
    """

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 1:
            raise ValueError(
                "TensorFusion expects a non-empty list of [batch, dim] tensors"
            )
        fused = None
        for vector in inputs:
            ones = ops.ones_like(vector[:, :1])
            extended = ops.concatenate([ones, vector], axis=-1)
            if fused is None:
                fused = extended
                continue
            outer = ops.expand_dims(fused, 2) * ops.expand_dims(extended, 1)
            width = fused.shape[-1] * extended.shape[-1]
            fused = ops.reshape(outer, (-1, width))
        return fused

    def compute_output_shape(self, input_shape):
        width = 1
        for shape in input_shape:
            width *= shape[-1] + 1
        return (input_shape[0][0], width)
