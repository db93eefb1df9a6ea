"""Low-rank Multimodal Fusion (Liu et al. 2018), the paper's strongest baseline."""

import dataclasses
from typing import ClassVar

import keras

from keras_mre.config import ModelConfig
from keras_mre.data import schema
from keras_mre.layers import LowRankFusion
from keras_mre.layers import LSTMEncoder
from keras_mre.layers import MaskedMeanDNNEncoder
from keras_mre.models.emotion_model import EmotionModel
from keras_mre.models.registry import register_model


def encode_modalities(config, inputs, units):
    """One `[batch, units]` vector per modality, in `config.modalities` order.

    `config.sequence_modalities` get an `LSTMEncoder`, the others the masked
    frame mean and a `config.dnn_layers`-deep DNN (`MaskedMeanDNNEncoder`):
    the unimodal sub-networks LMF and TFN share with MRE.
    """
    encoded = []
    for modality in config.modalities:
        if modality in config.sequence_modalities:
            encoder = LSTMEncoder(
                units,
                dropout=config.dropout,
                implementation=config.lstm_implementation,
                projection_dtype=config.lstm_projection_dtype,
                name=f"{modality}_encoder",
            )
        else:
            encoder = MaskedMeanDNNEncoder(
                units,
                num_layers=config.dnn_layers,
                dropout=config.dropout,
                name=f"{modality}_encoder",
            )
        encoded.append(
            encoder(inputs[modality], inputs[schema.length_key(modality)])
        )
    return encoded


def check_sequence_modalities(config):
    """Raises ConfigError unless `sequence_modalities` holds modality names
    and `lstm_implementation` / `lstm_projection_dtype` are known
    `LSTMEncoder` choices."""
    from keras_mre.config import LSTM_IMPLEMENTATIONS
    from keras_mre.config import LSTM_PROJECTION_DTYPES
    from keras_mre.errors import ConfigError

    config._check_choice("lstm_implementation", LSTM_IMPLEMENTATIONS)
    config._check_choice("lstm_projection_dtype", LSTM_PROJECTION_DTYPES)
    if not all(isinstance(m, str) for m in config.sequence_modalities):
        raise ConfigError(
            f"sequence_modalities={config.sequence_modalities!r}: expected "
            "modality names"
        )


@dataclasses.dataclass
class EncoderFieldsConfig(ModelConfig):
    """Fields of the models whose modalities go through `encode_modalities`.

    Args:
        dnn_layers: depth of the frame-mean DNN encoders.
        sequence_modalities: modalities encoded by an LSTM (default text).
        lstm_implementation: `LSTMEncoder` implementation (see `MREConfig`).
        lstm_projection_dtype: dtype of the LSTM input projection (see
            `MREConfig`).
    """

    dnn_layers: int = 3
    sequence_modalities: list[str] = dataclasses.field(
        default_factory=lambda: ["text"]
    )
    lstm_implementation: str = "auto"
    lstm_projection_dtype: str | None = None

    def validate(self):
        super().validate()
        self._check_positive_int("dnn_layers")
        check_sequence_modalities(self)


@dataclasses.dataclass
class LMFConfig(EncoderFieldsConfig):
    """Hyper-parameters of `LMFModel`.

    Args:
        rank: rank R of the low-rank fusion factors (Liu et al.: 4 on MOSEI).
        dnn_layers, sequence_modalities, lstm_implementation,
            lstm_projection_dtype: see `EncoderFieldsConfig`.
    """

    MODEL_NAME: ClassVar[str] = "lmf"

    rank: int = 4

    def validate(self):
        super().validate()
        self._check_positive_int("rank")


@keras.saving.register_keras_serializable(package="keras_mre")
class LMFModel(EmotionModel):
    """Low-rank Multimodal Fusion (Liu et al., ACL 2018).

    Each modality is encoded exactly as in MRE (LSTM for text, masked frame
    mean and DNN for the others, width `hidden_dim`); the unimodal vectors
    go, after dropout, straight into `LowRankFusion` (Liu et al. eq 6-8,
    this package's eq 1-2) which outputs the class logits. It is MRE without
    the relevance attention and without L_rs and L_cnce, which makes it the
    ablation reference for the relevance module.

    Outputs: `"emotion"` probabilities `[batch, C]`, `"logits"` `[batch, C]`.

    Args:
        config: an `LMFConfig`, its dict form, or None for the defaults.
    """

    config_class = LMFConfig

    def __init__(self, config=None, **kwargs):
        config = self.resolve_config(config)
        inputs = self.make_inputs(config)
        encoded = encode_modalities(config, inputs, config.hidden_dim)
        dropout = keras.layers.Dropout(config.dropout, name="fusion_dropout")
        encoded = [dropout(vector) for vector in encoded]
        logits = LowRankFusion(config.num_classes, rank=config.rank, name="fusion")(
            encoded
        )
        probabilities = keras.layers.Softmax(name="probabilities")(logits)
        outputs = {schema.OUTPUT_PROBABILITIES: probabilities, "logits": logits}
        super().__init__(config, inputs, outputs, **kwargs)


@register_model(LMFConfig.MODEL_NAME, LMFConfig)
def build_lmf(config):
    """Builds an uncompiled `LMFModel` from an `LMFConfig`."""
    return LMFModel(config)
