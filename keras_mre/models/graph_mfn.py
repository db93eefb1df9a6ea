"""Graph Memory Fusion Network (Zadeh et al. 2018b, the CMU-MOSEI paper)."""

import dataclasses
from typing import ClassVar

import keras

from keras_mre.data import schema
from keras_mre.errors import ConfigError
from keras_mre.models.emotion_model import EmotionModel
from keras_mre.models.mfn import MFNConfig
from keras_mre.models.mfn import memory_fusion_graph
from keras_mre.models.registry import register_model

_MAX_MODALITIES = 6


@dataclasses.dataclass
class GraphMFNConfig(MFNConfig):
    """Hyper-parameters of `GraphMFNModel`: those of `MFNConfig` plus

    Args:
        graph_dim: width of the Dynamic Fusion Graph's vertices and output.
    """

    MODEL_NAME: ClassVar[str] = "graph_mfn"

    graph_dim: int = 64

    def validate(self):
        super().validate()
        self._check_positive_int("graph_dim")
        if len(self.feature_dims) > _MAX_MODALITIES:
            raise ConfigError(
                f"feature_dims has {len(self.feature_dims)} modalities: "
                f"graph_mfn supports 1 to {_MAX_MODALITIES} modalities "
                "(its graph has 2^M - 1 vertices)"
            )


@keras.saving.register_keras_serializable(package="keras_mre")
class GraphMFNModel(EmotionModel):
    """Graph-MFN (Zadeh et al., ACL 2018): MFN with a Dynamic Fusion Graph.

    As `MFNModel`, except that the attended cell states are split per
    modality and fused by a `DynamicFusionGraph` (a vertex for every subset
    of modalities, edge efficacies computed per sample) whose output feeds
    the multi-view gated memory.

    Outputs: `"emotion"` probabilities `[batch, C]`, `"logits"` `[batch, C]`.

    Args:
        config: a `GraphMFNConfig`, its dict form, or None for the defaults.
    """

    config_class = GraphMFNConfig

    def __init__(self, config=None, **kwargs):
        config = self.resolve_config(config)
        inputs = self.make_inputs(config)
        logits = memory_fusion_graph(
            config, inputs, use_graph=True, graph_dim=config.graph_dim
        )
        probabilities = keras.layers.Softmax(name="probabilities")(logits)
        outputs = {schema.OUTPUT_PROBABILITIES: probabilities, "logits": logits}
        super().__init__(config, inputs, outputs, **kwargs)


@register_model(GraphMFNConfig.MODEL_NAME, GraphMFNConfig)
def build_graph_mfn(config):
    """Builds an uncompiled `GraphMFNModel` from a `GraphMFNConfig`."""
    return GraphMFNModel(config)
