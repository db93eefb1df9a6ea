"""Relevant semantic estimation: eq 3 attention, heads M1 / M2, eq 4."""

import math

import keras
from keras import ops

from keras_mre.errors import ConfigError


@keras.saving.register_keras_serializable(package="keras_mre")
class RelevanceAttention(keras.layers.Layer):
    """Self-attention over the modality bag with relevance and class heads.

    The relevant semantic estimation module of the paper (section 3.2).
    Let `X` be the bag of modality embeddings `[batch, M, d]`.

    * Eq 3, self-attention with Q, K and V all computed from the bag:
      `A = softmax(Q K^T / sqrt(d_k)) V` with `Q = X W_q`, `K = X W_k`,
      `V = X W_v`, split into `num_heads` heads of width `d_k = d / heads`
      (heads are concatenated back to width `d`; no output projection).
    * M1, one two-layer MLP per modality on its attention token `A_m`, gives
      one relevance logit per modality; a softmax over the modalities gives
      the relevance weights `H` `[batch, M]` (they sum to 1 per sample).
    * M2, one two-layer MLP per modality on `A_m`, gives per-modality class
      logits `[batch, M, C]` (P_s of eq 5).
    * The multimodal head (P_m of eq 5): a dense layer on the
      relevance-pooled attention output `sum_m H_m A_m`, `[batch, C]` logits.
    * Eq 4, the relevance-weighted embeddings `S^ = H (.) X`: each modality
      embedding (the frame mean after its encoder) scaled by its weight,
      `[batch, M, d]`.

    Args:
        num_classes: number of classes `C` of M2 and the multimodal head.
        num_heads: attention heads; must divide `d`.
        hidden_units: width of the hidden layer of M1 and M2 (default `d`).

    Call arguments:
        inputs: the bag `[batch, M, d]`, `M >= 2` fixed at build time.

    Returns:
        A dict with `"relevance"` H `[batch, M]`, `"unimodal"` logits
        `[batch, M, C]`, `"multimodal"` logits `[batch, C]`, `"embeddings"`
        S^ `[batch, M, d]` and `"attention"` A `[batch, M, d]`.
    """

    def __init__(self, num_classes, num_heads=1, hidden_units=None, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 2:
            raise ConfigError(f"num_classes={num_classes!r}: expected at least 2")
        if num_heads <= 0:
            raise ConfigError(f"num_heads={num_heads!r}: expected a positive integer")
        if hidden_units is not None and hidden_units <= 0:
            raise ConfigError(
                f"hidden_units={hidden_units!r}: expected a positive integer"
            )
        self.num_classes = num_classes
        self.num_heads = num_heads
        self.hidden_units = hidden_units

    def build(self, input_shape):
        _, modalities, width = tuple(input_shape)
        if modalities is None or modalities < 2:
            raise ConfigError(
                f"RelevanceAttention input modalities={modalities!r}: expected "
                "a fixed number >= 2"
            )
        if width % self.num_heads:
            raise ConfigError(
                f"num_heads={self.num_heads!r}: must divide the bag width {width}"
            )
        hidden = self.hidden_units or width
        classes = self.num_classes

        def weight(name, shape, initializer="glorot_uniform"):
            return self.add_weight(name=name, shape=shape, initializer=initializer)

        self.query_kernel = weight("query_kernel", (width, width))
        self.key_kernel = weight("key_kernel", (width, width))
        self.value_kernel = weight("value_kernel", (width, width))
        self.relevance_hidden_kernel = weight(
            "relevance_hidden_kernel", (modalities, width, hidden)
        )
        self.relevance_hidden_bias = weight(
            "relevance_hidden_bias", (modalities, hidden), "zeros"
        )
        self.relevance_kernel = weight("relevance_kernel", (modalities, hidden))
        self.relevance_bias = weight("relevance_bias", (modalities,), "zeros")
        self.class_hidden_kernel = weight(
            "class_hidden_kernel", (modalities, width, hidden)
        )
        self.class_hidden_bias = weight(
            "class_hidden_bias", (modalities, hidden), "zeros"
        )
        self.class_kernel = weight("class_kernel", (modalities, hidden, classes))
        self.class_bias = weight("class_bias", (modalities, classes), "zeros")
        self.multimodal_kernel = weight("multimodal_kernel", (width, classes))
        self.multimodal_bias = weight("multimodal_bias", (classes,), "zeros")

    def call(self, inputs):
        batch = ops.shape(inputs)[0]
        modalities, width = inputs.shape[1], inputs.shape[2]
        heads = self.num_heads
        head_width = width // heads

        # Projections as 2-D products over all tokens of the batch.
        tokens = ops.reshape(inputs, (-1, width))

        def project(kernel):
            projected = ops.matmul(tokens, kernel)
            return ops.reshape(projected, (batch, modalities, heads, head_width))

        q = project(self.query_kernel)
        k = project(self.key_kernel)
        v = project(self.value_kernel)
        scores = ops.einsum("bmhk,bnhk->bhmn", q, k) / math.sqrt(head_width)
        weights = ops.softmax(scores, axis=-1)
        attention = ops.einsum("bhmn,bnhk->bmhk", weights, v)
        attention = ops.reshape(attention, (batch, modalities, width))

        relevance_hidden = ops.relu(
            ops.einsum("bmd,mdh->bmh", attention, self.relevance_hidden_kernel)
            + self.relevance_hidden_bias
        )
        relevance_logits = (
            ops.sum(relevance_hidden * self.relevance_kernel, axis=-1)
            + self.relevance_bias
        )
        relevance = ops.softmax(relevance_logits, axis=-1)

        class_hidden = ops.relu(
            ops.einsum("bmd,mdh->bmh", attention, self.class_hidden_kernel)
            + self.class_hidden_bias
        )
        unimodal = (
            ops.einsum("bmh,mhc->bmc", class_hidden, self.class_kernel)
            + self.class_bias
        )

        pooled = ops.sum(relevance[:, :, None] * attention, axis=1)
        multimodal = ops.matmul(pooled, self.multimodal_kernel) + self.multimodal_bias
        embeddings = relevance[:, :, None] * inputs
        return {
            "relevance": relevance,
            "unimodal": unimodal,
            "multimodal": multimodal,
            "embeddings": embeddings,
            "attention": attention,
        }

    def compute_output_shape(self, input_shape):
        batch, modalities, width = tuple(input_shape)
        return {
            "relevance": (batch, modalities),
            "unimodal": (batch, modalities, self.num_classes),
            "multimodal": (batch, self.num_classes),
            "embeddings": (batch, modalities, width),
            "attention": (batch, modalities, width),
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "num_heads": self.num_heads,
                "hidden_units": self.hidden_units,
            }
        )
        return config
