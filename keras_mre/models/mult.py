"""Multimodal Transformer (MulT, Tsai et al. 2019) for unaligned sequences."""

import dataclasses
from typing import ClassVar

import keras
from keras import ops

from keras_mre.config import ModelConfig, _is_int, _is_number
from keras_mre.data import schema
from keras_mre.errors import ConfigError
from keras_mre.layers.crossmodal_transformer import CrossmodalTransformer
from keras_mre.layers.trim_padding import TrimPadding
from keras_mre.models.emotion_model import EmotionModel
from keras_mre.models.registry import register_model


@dataclasses.dataclass
class MulTConfig(ModelConfig):
    """Hyper-parameters of `MulTModel`.

    The widths and depths default to MMSA's MOSEI setting; the dropouts
    default to one rate per kind. MMSA's own MOSEI setting (per-source
    attention dropout, per-modality kernels, no dropout inside the
    transformers) is spelled out with the per-modality fields:

    ```python
    MulTConfig(
        feature_dims={"text": 768, "audio": 74, "vision": 35},
        conv_kernel_sizes={"text": 5, "audio": 1, "vision": 3},
        attention_dropout=0.4,
        source_attention_dropout={"audio": 0.0, "vision": 0.0},
        transformer_dropout=0.0,
        input_dropout={"text": 0.3},
        dropout=0.5,
    )
    ```

    Args:
        model_dim: width `d` every modality is projected to.
        num_heads: attention heads; must divide `model_dim`.
        num_layers: blocks of each crossmodal transformer.
        memory_layers: blocks of each target's final self-attention
            transformer.
        conv_kernel_size: kernel of the temporal 1-D convolution projecting
            each modality to `model_dim` ("same" padding).
        conv_kernel_sizes: per-modality kernels overriding
            `conv_kernel_size` (keys: modality names).
        attention_dropout: dropout on the attention weights of the
            self-attention transformers and of every crossmodal transformer
            whose source has no entry in `source_attention_dropout`.
        source_attention_dropout: per-source-modality dropout on attention
            weights: the crossmodal transformers reading that modality use
            it (MMSA's `attn_dropout_a` / `attn_dropout_v`).
        transformer_dropout: dropout on the scaled embeddings and the
            residual branches inside every transformer; None uses `dropout`.
        input_dropout: per-modality dropout on the input features, before
            the projection (MMSA's `text_dropout`); modalities without an
            entry get none.
        dropout: (from `ModelConfig`) dropout of the output residual block,
            and of the transformers when `transformer_dropout` is None.
    """

    MODEL_NAME: ClassVar[str] = "mult"

    model_dim: int = 30
    num_heads: int = 6
    num_layers: int = 4
    memory_layers: int = 3
    conv_kernel_size: int = 3
    conv_kernel_sizes: dict[str, int] = dataclasses.field(default_factory=dict)
    attention_dropout: float = 0.1
    source_attention_dropout: dict[str, float] = dataclasses.field(
        default_factory=dict
    )
    transformer_dropout: float | None = None
    input_dropout: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("conv_kernel_sizes", "source_attention_dropout",
                     "input_dropout"):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, dict(getattr(self, name)))
        super().__post_init__()

    def validate(self):
        super().validate()
        for name in ("model_dim", "num_heads", "num_layers", "memory_layers",
                     "conv_kernel_size"):
            self._check_positive_int(name)
        self._check_rate("attention_dropout")
        if self.transformer_dropout is not None:
            self._check_rate("transformer_dropout")
        self._check_divides("num_heads", "model_dim")
        self._check_per_modality("conv_kernel_sizes", "a positive integer",
                                 lambda v: _is_int(v) and v > 0)
        for name in ("source_attention_dropout", "input_dropout"):
            self._check_per_modality(name, "a rate in [0, 1)",
                                     _is_rate)

    def _check_per_modality(self, name, expected, accept):
        mapping = getattr(self, name)
        for key, value in mapping.items():
            if key not in self.feature_dims:
                raise ConfigError(
                    f"{name}={mapping!r}: {key!r} is not a modality of "
                    f"feature_dims {self.modalities}"
                )
            if not accept(value):
                raise ConfigError(
                    f"{name}[{key!r}]={value!r}: expected {expected}"
                )

    def kernel_size(self, modality):
        """The projection kernel of `modality`."""
        return self.conv_kernel_sizes.get(modality, self.conv_kernel_size)

    def attention_rate(self, source):
        """Attention-weight dropout of the transformers reading `source`
        (None: the self-attention transformers)."""
        if source is None:
            return self.attention_dropout
        return self.source_attention_dropout.get(source, self.attention_dropout)

    def inner_dropout(self):
        """Dropout inside the transformers."""
        if self.transformer_dropout is None:
            return self.dropout
        return self.transformer_dropout


def _is_rate(value):
    return _is_number(value) and 0.0 <= value < 1.0


def _last_valid(sequence, lengths):
    """`[batch, dim]`: the step at `lengths - 1` (zeros for empty clips)."""
    index = ops.maximum(ops.cast(lengths, "int32") - 1, 0)
    picked = ops.take_along_axis(sequence, index[:, None, None], axis=1)[:, 0]
    present = ops.cast(lengths > 0, sequence.dtype)[:, None]
    return picked * present


@keras.saving.register_keras_serializable(package="keras_mre")
class MulTModel(EmotionModel):
    """Multimodal Transformer for unaligned sequences (Tsai et al., ACL 2019).

    Each modality is projected to `model_dim` by a temporal convolution.
    For every target modality, one `CrossmodalTransformer` per other
    (source) modality lets the target attend to the source's full sequence
    (MulT eq 2-4, padded frames masked); the outputs for that target are
    concatenated (`[batch, T_target, (M-1) d]`), passed through a
    self-attention transformer, and read at the last valid step. The
    per-target vectors are concatenated, passed through a residual two-layer
    block and the classifier (MulT section 3.3).

    Differences from the paper: lengths mask padded frames in every
    attention and select the last valid step (MMSA's version attends to and
    reads padding). The convolution at a clip's last frames reads the
    frames after it, so frames past a length must be zero (as the data
    pipeline pads them).

    Each batch is first cut to its longest clip per modality
    (`TrimPadding`, TensorFlow outside XLA): the attention maps shrink with
    the square of that length, and the valid frames' results are the same.

    Outputs: `"emotion"` probabilities `[batch, C]`, `"logits"` `[batch, C]`.

    Args:
        config: a `MulTConfig`, its dict form, or None for the defaults.
    """

    config_class = MulTConfig

    def __init__(self, config=None, **kwargs):
        config = self.resolve_config(config)
        inputs = self.make_inputs(config)
        modalities = config.modalities
        projected, lengths = {}, {}
        for modality in modalities:
            length = inputs[schema.length_key(modality)]
            frames = TrimPadding(name=f"{modality}_trim")(inputs[modality], length)
            if config.input_dropout.get(modality, 0.0) > 0.0:
                frames = keras.layers.Dropout(
                    config.input_dropout[modality], name=f"{modality}_dropout"
                )(frames)
            projected[modality] = keras.layers.Conv1D(
                config.model_dim,
                config.kernel_size(modality),
                padding="same",
                use_bias=False,
                name=f"{modality}_projection",
            )(frames)
            lengths[modality] = length
        heads = []
        width = config.model_dim * (len(modalities) - 1)
        for target in modalities:
            crossed = []
            for source in modalities:
                if source == target:
                    continue
                crossed.append(
                    CrossmodalTransformer(
                        config.model_dim,
                        config.num_heads,
                        config.num_layers,
                        dropout=config.inner_dropout(),
                        attention_dropout=config.attention_rate(source),
                        name=f"{source}_to_{target}",
                    )(
                        projected[target],
                        lengths[target],
                        projected[source],
                        lengths[source],
                    )
                )
            joined = ops.concatenate(crossed, axis=-1)
            memory = CrossmodalTransformer(
                width,
                config.num_heads,
                config.memory_layers,
                dropout=config.inner_dropout(),
                attention_dropout=config.attention_rate(None),
                name=f"{target}_memory",
            )(joined, lengths[target])
            heads.append(_last_valid(memory, lengths[target]))
        fused = ops.concatenate(heads, axis=-1)
        hidden = keras.layers.Dense(
            fused.shape[-1], activation="relu", name="residual_in"
        )(fused)
        hidden = keras.layers.Dropout(config.dropout, name="residual_dropout")(hidden)
        hidden = keras.layers.Dense(fused.shape[-1], name="residual_out")(hidden)
        logits = keras.layers.Dense(config.num_classes, name="logits")(hidden + fused)
        probabilities = keras.layers.Softmax(name="probabilities")(logits)
        outputs = {schema.OUTPUT_PROBABILITIES: probabilities, "logits": logits}
        super().__init__(config, inputs, outputs, **kwargs)


@register_model(MulTConfig.MODEL_NAME, MulTConfig)
def build_mult(config):
    """Builds an uncompiled `MulTModel` from a `MulTConfig`."""
    return MulTModel(config)
