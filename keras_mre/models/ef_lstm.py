"""Early-fusion LSTM baseline (EF-LSTM)."""

import dataclasses
from typing import ClassVar

import keras
from keras import ops

from keras_mre.config import ModelConfig
from keras_mre.data import schema
from keras_mre.layers.segment_pooling import SegmentPooling
from keras_mre.models.emotion_model import EmotionModel
from keras_mre.models.registry import register_model


@dataclasses.dataclass
class EFLSTMConfig(ModelConfig):
    """Hyper-parameters of `EFLSTMModel`.

    Args:
        num_steps: length of the common time axis every modality is pooled
            onto (MMSA aligns MOSEI to its 50 text tokens).
        lstm_layers: number of stacked LSTM layers (width `hidden_dim`).
    """

    MODEL_NAME: ClassVar[str] = "ef_lstm"

    num_steps: int = 50
    lstm_layers: int = 2

    def validate(self):
        super().validate()
        self._check_positive_int("num_steps")
        self._check_positive_int("lstm_layers")


@keras.saving.register_keras_serializable(package="keras_mre")
class EFLSTMModel(EmotionModel):
    """Early fusion: one LSTM over the per-step concatenation of all modalities.

    The EF-LSTM baseline of the MFN and MOSEI papers (Zadeh et al. 2018)
    concatenates word-aligned features of all modalities at each time step
    and runs a stacked LSTM over them. Our inputs are unaligned, so each
    modality is first averaged onto `num_steps` equal segments of its valid
    frames (`SegmentPooling`) and layer-normalised; the `[batch, num_steps,
    sum D_m]` sequence passes `lstm_layers` LSTMs of width `hidden_dim`, and
    the last state goes through a ReLU layer and the classifier.

    Outputs: `"emotion"` probabilities `[batch, C]`, `"logits"` `[batch, C]`.

    Args:
        config: an `EFLSTMConfig`, its dict form, or None for the defaults.
    """

    config_class = EFLSTMConfig

    def __init__(self, config=None, **kwargs):
        config = self.resolve_config(config)
        inputs = self.make_inputs(config)
        steps = []
        for modality in config.modalities:
            pooled = SegmentPooling(config.num_steps, name=f"{modality}_pooling")(
                inputs[modality], inputs[schema.length_key(modality)]
            )
            steps.append(
                keras.layers.LayerNormalization(name=f"{modality}_norm")(pooled)
            )
        x = ops.concatenate(steps, axis=-1)
        for index in range(config.lstm_layers):
            last = index == config.lstm_layers - 1
            x = keras.layers.LSTM(
                config.hidden_dim, return_sequences=not last, name=f"lstm_{index}"
            )(x)
            x = keras.layers.Dropout(config.dropout, name=f"lstm_dropout_{index}")(x)
        x = keras.layers.Dense(config.hidden_dim, activation="relu", name="hidden")(x)
        x = keras.layers.Dropout(config.dropout, name="hidden_dropout")(x)
        logits = keras.layers.Dense(config.num_classes, name="logits")(x)
        probabilities = keras.layers.Softmax(name="probabilities")(logits)
        outputs = {schema.OUTPUT_PROBABILITIES: probabilities, "logits": logits}
        super().__init__(config, inputs, outputs, **kwargs)


@register_model(EFLSTMConfig.MODEL_NAME, EFLSTMConfig)
def build_ef_lstm(config):
    """Builds an uncompiled `EFLSTMModel` from an `EFLSTMConfig`."""
    return EFLSTMModel(config)
