"""Crossmodal transformer: a target sequence attends to a source sequence."""

import math

import keras
from keras import ops


def _sinusoidal_positions(length, dim, dtype):
    positions = ops.cast(ops.arange(length), dtype)[:, None]
    half = dim // 2
    scale = math.log(10000.0) / max(half - 1, 1)
    frequencies = ops.exp(ops.cast(ops.arange(half), dtype) * -scale)
    angles = positions * frequencies[None, :]
    table = ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)
    if dim % 2:
        table = ops.pad(table, [[0, 0], [0, 1]])
    return table


def _attention(q, k, v, keep):
    """`(softmax(q k^T) * keep) v` over `[batch, heads, time, width]`
    operands (`keep`: boolean `[batch, heads, target_time, source_time]`
    or None). A hand-written gradient that forms the softmax's row sums
    from the small output (`rowsum(dO * O)`, as FlashAttention does) ran
    no faster than TensorFlow's own on MulT's MOSEI shapes."""
    weights = ops.softmax(ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))), axis=-1)
    if keep is not None:
        weights = ops.where(keep, weights, 0.0)
    return ops.matmul(weights, v)


@keras.saving.register_keras_serializable(package="keras_mre")
class CrossmodalTransformer(keras.layers.Layer):
    """Stack of pre-norm transformer blocks whose keys/values come from a source.

    MulT (Tsai et al. 2019, eq 2-4): each block computes
    `Z = Z + MHA(LN(Z), LN(X_src), LN(X_src))` followed by
    `Z = Z + FFN(LN(Z))`; with no source the blocks are ordinary
    self-attention blocks (MulT's final per-target transformers). Inputs are
    scaled by `sqrt(dim)` and get sinusoidal position encodings first, and a
    final layer normalization closes the stack. Padded source frames are
    masked out of every attention; a clip with no valid source frame attends
    to nothing (the attention adds only the output projection's bias).

    Each block's attention (eq 2-3) is written out rather than taken from
    `keras.layers.MultiHeadAttention`: its `[batch, heads, target_time,
    source_time]` weights dominate MulT's cost on long audio and vision
    sequences, and here the mask reaches them inside their product, as
    an additive bias, with no einsum transposes around them (MulT training
    steps on MOSEI shapes about 1.3-1.4x faster at batch 4, under 1.1x at
    batch 64, where memory traffic of the 384 MB maps dominates); attention
    dropout rescales the values rather than the maps.

    Args:
        dim: int, the model width of both sequences.
        num_heads: int, attention heads (must divide `dim`).
        num_layers: int, number of blocks.
        ffn_multiplier: int, width of the feed-forward layer as a multiple of
            `dim`.
        dropout: float, dropout after attention and feed-forward outputs.
        attention_dropout: float, dropout on the attention weights.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        target: `[batch, target_time, dim]`.
        target_lengths: `[batch]` int, valid target frames.
        source: `[batch, source_time, dim]` or None for self-attention.
        source_lengths: `[batch]` int, valid source frames, or None with
            `source=None`.

    Returns:
        `[batch, target_time, dim]`.
    """

    def __init__(
        self,
        dim,
        num_heads,
        num_layers,
        ffn_multiplier=4,
        dropout=0.1,
        attention_dropout=0.1,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if dim % num_heads:
            raise ValueError(
                f"num_heads={num_heads} must divide dim={dim}"
            )
        if not 0.0 <= attention_dropout < 1.0:
            raise ValueError(
                f"attention_dropout={attention_dropout}: expected a rate in [0, 1)"
            )
        self.dim = int(dim)
        self.num_heads = int(num_heads)
        self.num_layers = int(num_layers)
        self.ffn_multiplier = int(ffn_multiplier)
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)
        self.query_norms = []
        self.source_norms = []
        self.query_projections = []
        self.key_value_projections = []
        self.output_projections = []
        self.attention_drops = []
        self.ffn_norms = []
        self.ffn_in = []
        self.ffn_out = []
        for index in range(self.num_layers):
            self.query_norms.append(
                keras.layers.LayerNormalization(name=f"query_norm_{index}")
            )
            self.query_projections.append(
                keras.layers.Dense(self.dim, name=f"query_{index}")
            )
            # Keys and values read the same normalized source: one product.
            self.key_value_projections.append(
                keras.layers.Dense(2 * self.dim, name=f"key_value_{index}")
            )
            self.output_projections.append(
                keras.layers.Dense(self.dim, name=f"attention_output_{index}")
            )
            self.attention_drops.append(
                keras.layers.Dropout(
                    self.attention_dropout, name=f"attention_dropout_{index}"
                )
            )
            self.ffn_norms.append(
                keras.layers.LayerNormalization(name=f"ffn_norm_{index}")
            )
            self.ffn_in.append(
                keras.layers.Dense(
                    self.dim * self.ffn_multiplier,
                    activation="relu",
                    name=f"ffn_in_{index}",
                )
            )
            self.ffn_out.append(
                keras.layers.Dense(self.dim, name=f"ffn_out_{index}")
            )
        self.final_norm = keras.layers.LayerNormalization(name="final_norm")
        self.drop = keras.layers.Dropout(self.dropout)

    def build(self, target_shape, target_lengths_shape=None, source_shape=None,
              source_lengths_shape=None):
        target_shape = tuple(target_shape)
        context_shape = target_shape
        if source_shape is not None:
            context_shape = tuple(source_shape)
            self.source_norms = [
                keras.layers.LayerNormalization(name=f"source_norm_{index}")
                for index in range(self.num_layers)
            ]
        for index in range(self.num_layers):
            self.query_norms[index].build(target_shape)
            if source_shape is not None:
                self.source_norms[index].build(context_shape)
            self.query_projections[index].build(target_shape)
            self.key_value_projections[index].build(context_shape)
            self.output_projections[index].build(target_shape)
            self.ffn_norms[index].build(target_shape)
            self.ffn_in[index].build(target_shape)
            self.ffn_out[index].build(
                target_shape[:-1] + (self.dim * self.ffn_multiplier,)
            )
        self.final_norm.build(target_shape)
        self.built = True

    def _embed(self, sequence):
        length = ops.shape(sequence)[1]
        positions = _sinusoidal_positions(length, self.dim, sequence.dtype)
        return sequence * math.sqrt(self.dim) + positions[None, :, :]

    def _split_heads(self, sequence):
        # [batch, time, dim] -> [batch, heads, time, dim / heads]
        batch, time = ops.shape(sequence)[0], ops.shape(sequence)[1]
        sequence = ops.reshape(
            sequence, (batch, time, self.num_heads, self.dim // self.num_heads)
        )
        return ops.transpose(sequence, (0, 2, 1, 3))

    def _attend(self, index, query, context, key_bias, value_mask, training):
        """Multi-head attention of block `index` (MulT eq 2-3).

        Scores are `[batch, heads, target_time, source_time]`, the largest
        tensors of the model, so no pass over them is spent on what can be
        done on the small ones:

        - the padding mask's additive bias `[batch, 1, source_time, 1]`
          enters the scores inside their product, as one more dimension of
          the queries (all ones) and keys (the bias);
        - attention dropout zeroes weights but leaves its `1 / (1 - rate)`
          rescaling to the values;
        - the values of padded frames are zeroed instead of masking the
          weights a second time, so a clip with no valid source frame
          attends to nothing (output 0 before the output projection).
        """
        head_dim = self.dim // self.num_heads
        q = self._split_heads(self.query_projections[index](query))
        q = q * (1.0 / math.sqrt(head_dim))
        key_value = self.key_value_projections[index](context)
        k = self._split_heads(key_value[..., : self.dim])
        v = self._split_heads(key_value[..., self.dim :]) * value_mask
        q = ops.concatenate([q, ops.ones_like(q[..., :1])], axis=-1)
        k = ops.concatenate(
            [k, ops.broadcast_to(key_bias, ops.shape(k[..., :1]))], axis=-1
        )
        keep = None
        rate = self.attention_dropout
        if training and rate > 0:
            scores_shape = ops.shape(q)[:3] + ops.shape(k)[2:3]
            noise = keras.random.uniform(
                scores_shape,
                dtype=q.dtype,
                seed=self.attention_drops[index].seed_generator,
            )
            keep = noise >= rate
            v = v * (1.0 / (1.0 - rate))
        attended = ops.transpose(_attention(q, k, v, keep), (0, 2, 1, 3))
        attended = ops.reshape(attended, ops.shape(query))
        return self.output_projections[index](attended)

    def call(self, target, target_lengths, source=None, source_lengths=None,
             training=None):
        self_attention = source is None
        x = self.drop(self._embed(target), training=training)
        if self_attention:
            source, source_lengths = target, target_lengths
        else:
            source = self.drop(self._embed(source), training=training)
        source_time = ops.shape(source)[1]
        valid = ops.arange(source_time, dtype="int32")[None, :] < ops.cast(
            source_lengths, "int32"
        )[:, None]
        valid = ops.cast(valid, x.dtype)[:, None, :, None]  # [B, 1, S, 1]
        # -1e9 rather than -inf: a clip with no valid frame still gets finite
        # (uniform) weights, which meet zeroed values.
        key_bias = (valid - 1.0) * 1e9  # [B, 1, S, 1]
        for index in range(self.num_layers):
            query = self.query_norms[index](x)
            if self_attention:
                context = query
            else:
                context = self.source_norms[index](source)
            attended = self._attend(
                index, query, context, key_bias, valid, training
            )
            x = x + self.drop(attended, training=training)
            hidden = self.ffn_in[index](self.ffn_norms[index](x))
            x = x + self.drop(self.ffn_out[index](hidden), training=training)
        return self.final_norm(x)

    def compute_output_shape(self, target_shape, *args, **kwargs):
        return tuple(target_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            dim=self.dim,
            num_heads=self.num_heads,
            num_layers=self.num_layers,
            ffn_multiplier=self.ffn_multiplier,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
        )
        return config
