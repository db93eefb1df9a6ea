"""Memory Fusion Network (Zadeh et al. 2018a)."""

import dataclasses
from typing import ClassVar

import keras
from keras import ops

from keras_mre.config import ModelConfig
from keras_mre.data import schema
from keras_mre.layers.memory_fusion_cell import MemoryFusionCell
from keras_mre.layers.segment_pooling import SegmentPooling
from keras_mre.models.emotion_model import EmotionModel
from keras_mre.models.registry import register_model


@dataclasses.dataclass
class MFNConfig(ModelConfig):
    """Hyper-parameters of `MFNModel`.

    Args:
        num_steps: length of the common time axis every modality is pooled
            onto (MFN needs aligned modalities).
        lstm_dim: hidden width of each modality's LSTM.
        memory_dim: width of the multi-view gated memory.
        attention_dim: hidden width of the delta-memory attention network.
        gate_dim: hidden width of the memory's update and gate networks.
    """

    MODEL_NAME: ClassVar[str] = "mfn"

    num_steps: int = 20
    lstm_dim: int = 32
    memory_dim: int = 64
    attention_dim: int = 64
    gate_dim: int = 64

    def validate(self):
        super().validate()
        for name in ("num_steps", "lstm_dim", "memory_dim", "attention_dim",
                     "gate_dim"):
            self._check_positive_int(name)


def memory_fusion_graph(config, inputs, use_graph, graph_dim=64):
    """Class logits of MFN (or Graph-MFN with `use_graph=True`).

    Every modality is averaged onto `config.num_steps` segments of its valid
    frames and layer-normalised; the concatenated steps run through
    `MemoryFusionCell`, whose final output (all LSTM states and the memory)
    passes a ReLU layer with dropout and the classifier.
    """
    steps = []
    dims = []
    for modality in config.modalities:
        pooled = SegmentPooling(config.num_steps, name=f"{modality}_pooling")(
            inputs[modality], inputs[schema.length_key(modality)]
        )
        steps.append(keras.layers.LayerNormalization(name=f"{modality}_norm")(pooled))
        dims.append(config.feature_dims[modality])
    cell = MemoryFusionCell(
        dims,
        lstm_dim=config.lstm_dim,
        memory_dim=config.memory_dim,
        attention_dim=config.attention_dim,
        gate_dim=config.gate_dim,
        dropout=config.dropout,
        use_graph=use_graph,
        graph_dim=graph_dim,
        external_dropout=True,
        name="memory_fusion_cell",
    )
    sequence = ops.concatenate(steps, axis=-1)
    # The gate networks' dropout, one mask per step, drawn for all steps
    # before the recurrence (see `MemoryFusionCell`): ones, dropped.
    ones = ops.zeros_like(sequence[..., :1]) + ops.ones(
        (3 * config.gate_dim,), dtype=sequence.dtype
    )
    keep = keras.layers.Dropout(config.dropout, name="gate_dropout")(ones)
    final = keras.layers.RNN(cell, name="memory_fusion")(
        ops.concatenate([sequence, keep], axis=-1)
    )
    hidden = keras.layers.Dense(config.hidden_dim, activation="relu", name="hidden")(
        final
    )
    hidden = keras.layers.Dropout(config.dropout, name="hidden_dropout")(hidden)
    return keras.layers.Dense(config.num_classes, name="logits")(hidden)


@keras.saving.register_keras_serializable(package="keras_mre")
class MFNModel(EmotionModel):
    """Memory Fusion Network (Zadeh et al., AAAI 2018).

    A System of LSTMs (one per modality) runs over a shared time axis; at
    each step the Delta-memory Attention Network weighs the cell states of
    the previous and current step and the Multi-view Gated Memory stores
    cross-modal interactions (`MemoryFusionCell`, MFN eq 1-5). The final
    LSTM states and memory give the prediction. Our inputs are unaligned,
    so each modality is first averaged onto `num_steps` equal segments of
    its valid frames (`SegmentPooling`), as MMSA's average-pool alignment
    does for MFN.

    Outputs: `"emotion"` probabilities `[batch, C]`, `"logits"` `[batch, C]`.

    Args:
        config: an `MFNConfig`, its dict form, or None for the defaults.
    """

    config_class = MFNConfig

    def __init__(self, config=None, **kwargs):
        config = self.resolve_config(config)
        inputs = self.make_inputs(config)
        logits = memory_fusion_graph(config, inputs, use_graph=False)
        probabilities = keras.layers.Softmax(name="probabilities")(logits)
        outputs = {schema.OUTPUT_PROBABILITIES: probabilities, "logits": logits}
        super().__init__(config, inputs, outputs, **kwargs)


@register_model(MFNConfig.MODEL_NAME, MFNConfig)
def build_mfn(config):
    """Builds an uncompiled `MFNModel` from an `MFNConfig`."""
    return MFNModel(config)
