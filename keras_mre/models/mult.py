"""Multimodal Transformer (MulT, Tsai et al. 2019) for unaligned sequences."""

import dataclasses
from typing import ClassVar

import keras
from keras import ops

from keras_mre.config import ModelConfig
from keras_mre.data import schema
from keras_mre.layers.crossmodal_transformer import CrossmodalTransformer
from keras_mre.models.emotion_model import EmotionModel
from keras_mre.models.registry import register_model


@dataclasses.dataclass
class MulTConfig(ModelConfig):
    """Hyper-parameters of `MulTModel` (defaults: MMSA's MOSEI setting).

    Args:
        model_dim: width `d` every modality is projected to.
        num_heads: attention heads; must divide `model_dim`.
        num_layers: blocks of each crossmodal transformer.
        memory_layers: blocks of each target's final self-attention
            transformer.
        conv_kernel_size: kernel of the temporal 1-D convolution projecting
            each modality to `model_dim` ("same" padding).
        attention_dropout: dropout on attention weights.
    """

    MODEL_NAME: ClassVar[str] = "mult"

    model_dim: int = 30
    num_heads: int = 6
    num_layers: int = 4
    memory_layers: int = 3
    conv_kernel_size: int = 3
    attention_dropout: float = 0.1

    def validate(self):
        super().validate()
        for name in ("model_dim", "num_heads", "num_layers", "memory_layers",
                     "conv_kernel_size"):
            self._check_positive_int(name)
        self._check_rate("attention_dropout")
        self._check_divides("num_heads", "model_dim")


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
            frames = inputs[modality]
            length = inputs[schema.length_key(modality)]
            projected[modality] = keras.layers.Conv1D(
                config.model_dim,
                config.conv_kernel_size,
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
                        dropout=config.dropout,
                        attention_dropout=config.attention_dropout,
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
                dropout=config.dropout,
                attention_dropout=config.attention_dropout,
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
