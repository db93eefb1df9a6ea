"""Tensor Fusion Network (Zadeh et al. 2017)."""

import dataclasses
from typing import ClassVar

import keras

from keras_mre.data import schema
from keras_mre.layers.tensor_fusion import TensorFusion
from keras_mre.models.emotion_model import EmotionModel
from keras_mre.models.lmf import EncoderFieldsConfig
from keras_mre.models.lmf import encode_modalities
from keras_mre.models.registry import register_model

_MAX_FUSED_WIDTH = 2_000_000


@dataclasses.dataclass
class TFNConfig(EncoderFieldsConfig):
    """Hyper-parameters of `TFNModel`.

    Args:
        fusion_dim: width of each unimodal vector entering the outer product;
            the fused tensor has `(fusion_dim + 1) ** M` entries.
        post_fusion_dim: width of the two hidden layers after fusion.
        dnn_layers, sequence_modalities, lstm_implementation,
            lstm_projection_dtype: see `EncoderFieldsConfig`.
    """

    MODEL_NAME: ClassVar[str] = "tfn"

    fusion_dim: int = 32
    post_fusion_dim: int = 128

    def validate(self):
        super().validate()
        from keras_mre.errors import ConfigError

        self._check_positive_int("fusion_dim")
        self._check_positive_int("post_fusion_dim")
        width = (self.fusion_dim + 1) ** len(self.feature_dims)
        if width > _MAX_FUSED_WIDTH:
            raise ConfigError(
                f"fusion_dim={self.fusion_dim}: the fused tensor of "
                f"{len(self.feature_dims)} modalities would have {width} "
                f"entries, more than {_MAX_FUSED_WIDTH}; lower fusion_dim"
            )


@keras.saving.register_keras_serializable(package="keras_mre")
class TFNModel(EmotionModel):
    """Tensor Fusion Network (Zadeh et al., EMNLP 2017).

    Unimodal sub-networks as in MRE and LMF (width `hidden_dim`), each
    projected to `fusion_dim`; `TensorFusion` forms the flattened outer
    product of `[1; z_m]` over all modalities (TFN eq 1, every unimodal,
    bimodal and trimodal interaction), and a sentiment inference sub-network
    of two ReLU layers of `post_fusion_dim` (with dropout) gives the logits.

    Outputs: `"emotion"` probabilities `[batch, C]`, `"logits"` `[batch, C]`.

    Args:
        config: a `TFNConfig`, its dict form, or None for the defaults.
    """

    config_class = TFNConfig

    def __init__(self, config=None, **kwargs):
        config = self.resolve_config(config)
        inputs = self.make_inputs(config)
        encoded = encode_modalities(config, inputs, config.hidden_dim)
        projected = [
            keras.layers.Dense(
                config.fusion_dim, activation="relu", name=f"{m}_projection"
            )(vector)
            for m, vector in zip(config.modalities, encoded)
        ]
        fused = TensorFusion(name="tensor_fusion")(projected)
        x = keras.layers.Dropout(config.dropout, name="fusion_dropout")(fused)
        for index in range(2):
            x = keras.layers.Dense(
                config.post_fusion_dim, activation="relu", name=f"post_fusion_{index}"
            )(x)
            x = keras.layers.Dropout(config.dropout, name=f"post_dropout_{index}")(x)
        logits = keras.layers.Dense(config.num_classes, name="logits")(x)
        probabilities = keras.layers.Softmax(name="probabilities")(logits)
        outputs = {schema.OUTPUT_PROBABILITIES: probabilities, "logits": logits}
        super().__init__(config, inputs, outputs, **kwargs)


@register_model(TFNConfig.MODEL_NAME, TFNConfig)
def build_tfn(config):
    """Builds an uncompiled `TFNModel` from a `TFNConfig`."""
    return TFNModel(config)
