"""MISA: modality-invariant and -specific representations (Hazarika et al. 2020)."""

import dataclasses
import itertools
from typing import ClassVar

import keras
from keras import ops

from keras_mre import distribute
from keras_mre.config import ModelConfig
from keras_mre.data import schema
from keras_mre.errors import ConfigError
from keras_mre.layers.segment_pooling import SegmentPooling
from keras_mre.models.emotion_model import EmotionModel
from keras_mre.models.registry import register_model


@dataclasses.dataclass
class MISAConfig(ModelConfig):
    """Hyper-parameters of `MISAModel` (loss weights: MMSA's MOSEI setting).

    Args:
        utterance_modalities: modalities summarised by the mean of their
            valid frames (MISA's BERT text: the mean of the token states);
            the others by a two-layer bidirectional LSTM.
        max_steps: frames of LSTM-encoded modalities are averaged onto this
            many segments before the LSTMs.
        fusion_heads: heads of the one-layer transformer over the `2 M`
            representations; must divide `hidden_dim`.
        diff_weight: weight of the difference (soft orthogonality) loss.
        sim_weight: weight of the similarity loss (central moment
            discrepancy between the invariant representations).
        recon_weight: weight of the reconstruction loss.
        cmd_moments: number of moments `K` of the central moment discrepancy.
    """

    MODEL_NAME: ClassVar[str] = "misa"

    utterance_modalities: list[str] = dataclasses.field(
        default_factory=lambda: ["text"]
    )
    max_steps: int = 50
    fusion_heads: int = 2
    diff_weight: float = 0.3
    sim_weight: float = 0.8
    recon_weight: float = 1.0
    cmd_moments: int = 5

    def validate(self):
        super().validate()
        self._check_positive_int("max_steps")
        self._check_positive_int("fusion_heads")
        self._check_positive_int("cmd_moments")
        self._check_divides("fusion_heads", "hidden_dim")
        self._check_non_negative("diff_weight", "sim_weight", "recon_weight")
        if not all(isinstance(m, str) for m in self.utterance_modalities):
            raise ConfigError(
                f"utterance_modalities={self.utterance_modalities!r}: expected "
                "modality names"
            )


def _difference_loss(a, b):
    """Soft orthogonality `mean((A^T B)^2)` of batch-centred, L2-normed rows."""
    a = a - ops.mean(a, axis=0, keepdims=True)
    b = b - ops.mean(b, axis=0, keepdims=True)
    a = a / (ops.sqrt(ops.sum(a * a, axis=1, keepdims=True)) + 1e-6)
    b = b / (ops.sqrt(ops.sum(b * b, axis=1, keepdims=True)) + 1e-6)
    return ops.mean(ops.square(ops.matmul(ops.transpose(a), b)))


def _norm(x):
    return ops.sqrt(ops.sum(ops.square(x)) + 1e-12)


def _central_moment_discrepancy(a, b, moments):
    """CMD (Zellinger et al. 2017): distance of means and central moments."""
    mean_a = ops.mean(a, axis=0)
    mean_b = ops.mean(b, axis=0)
    centred_a = a - mean_a
    centred_b = b - mean_b
    total = _norm(mean_a - mean_b)
    for order in range(2, moments + 1):
        total = total + _norm(
            ops.mean(centred_a**order, axis=0) - ops.mean(centred_b**order, axis=0)
        )
    return total


@keras.saving.register_keras_serializable(package="keras_mre")
class MISAModel(EmotionModel):
    """MISA (Hazarika et al., ACM MM 2020) on precomputed features.

    Utterance vectors: the mean of the valid frames for
    `utterance_modalities` (MISA's text, there a fine-tuned BERT; here the
    BERT features are given), and for every other modality a two-layer
    bidirectional LSTM (width = the modality's feature size, as in MISA,
    with layer normalization between the layers) over its frames averaged
    onto `max_steps` segments, read as the concatenated final states of both
    layers and directions. Each utterance vector is projected to
    `hidden_dim` (ReLU, layer norm): `u_m`. A shared encoder (one sigmoid
    layer, the same for all modalities) gives the invariant `h_m^c`, a
    private encoder per modality the specific `h_m^p`; decoders reconstruct
    `u_m` from `h_m^c + h_m^p`. The `2 M` representations pass a one-layer
    transformer encoder and are concatenated into the classifier.

    Losses (MISA eq 5-9), added to the cross-entropy through
    `auxiliary_losses`: `diff` (soft orthogonality between `h_m^c` and
    `h_m^p` and between private pairs), `sim` (central moment discrepancy of
    order `cmd_moments` between invariant pairs), `recon` (mean squared
    error of the reconstructions), weighted by the config.

    Outputs: `"emotion"` `[batch, C]`, `"logits"` `[batch, C]`, and the
    representations `"projected"`, `"shared"`, `"private"`,
    `"reconstructed"`, each `[batch, M, hidden_dim]`.

    Args:
        config: a `MISAConfig`, its dict form, or None for the defaults.
    """

    config_class = MISAConfig

    def __init__(self, config=None, **kwargs):
        config = self.resolve_config(config)
        d = config.hidden_dim
        inputs = self.make_inputs(config)
        shared_encoder = keras.layers.Dense(d, activation="sigmoid", name="shared")
        projected, shared, private, reconstructed = [], [], [], []
        for modality in config.modalities:
            frames = inputs[modality]
            length = inputs[schema.length_key(modality)]
            if modality in config.utterance_modalities:
                pooled = SegmentPooling(1, name=f"{modality}_mean")(frames, length)
                utterance = ops.squeeze(pooled, axis=1)
            else:
                units = config.feature_dims[modality]
                steps = SegmentPooling(config.max_steps, name=f"{modality}_pooling")(
                    frames, length
                )
                sequence, *first = _bidirectional_lstm(
                    steps, units, f"{modality}_lstm_1", return_sequences=True
                )
                normed = keras.layers.LayerNormalization(name=f"{modality}_lstm_norm")(
                    sequence
                )
                _, *second = _bidirectional_lstm(normed, units, f"{modality}_lstm_2")
                utterance = ops.concatenate(first + second, axis=-1)
            u = keras.layers.Dense(d, activation="relu", name=f"{modality}_project")(
                utterance
            )
            u = keras.layers.LayerNormalization(name=f"{modality}_project_norm")(u)
            h_shared = shared_encoder(u)
            h_private = keras.layers.Dense(
                d, activation="sigmoid", name=f"{modality}_private"
            )(u)
            recon = keras.layers.Dense(d, name=f"{modality}_reconstruct")(
                h_shared + h_private
            )
            projected.append(u)
            shared.append(h_shared)
            private.append(h_private)
            reconstructed.append(recon)
        tokens = ops.stack(private + shared, axis=1)
        attended = keras.layers.MultiHeadAttention(
            config.fusion_heads,
            d // config.fusion_heads,
            dropout=config.dropout,
            name="fusion_attention",
        )(tokens, tokens)
        tokens = keras.layers.LayerNormalization(name="fusion_norm_1")(tokens + attended)
        ffn = keras.layers.Dense(4 * d, activation="relu", name="fusion_ffn_in")(tokens)
        ffn = keras.layers.Dense(d, name="fusion_ffn_out")(ffn)
        tokens = keras.layers.LayerNormalization(name="fusion_norm_2")(tokens + ffn)
        flat = keras.layers.Flatten(name="fusion_flatten")(tokens)
        hidden = keras.layers.Dense(
            len(config.modalities) * d, activation="relu", name="fusion_hidden"
        )(flat)
        hidden = keras.layers.Dropout(config.dropout, name="fusion_dropout")(hidden)
        logits = keras.layers.Dense(config.num_classes, name="logits")(hidden)
        probabilities = keras.layers.Softmax(name="probabilities")(logits)
        outputs = {
            schema.OUTPUT_PROBABILITIES: probabilities,
            "logits": logits,
            "projected": ops.stack(projected, axis=1),
            "shared": ops.stack(shared, axis=1),
            "private": ops.stack(private, axis=1),
            "reconstructed": ops.stack(reconstructed, axis=1),
        }
        super().__init__(config, inputs, outputs, **kwargs)

    def auxiliary_loss_names(self):
        return ("diff", "sim", "recon")

    def auxiliary_losses(self, x, y, y_pred, sample_weight=None, training=True):
        count = len(self.config.modalities)
        shared = [y_pred["shared"][:, m] for m in range(count)]
        private = [y_pred["private"][:, m] for m in range(count)]
        diff = sum(_difference_loss(private[m], shared[m]) for m in range(count))
        for i, j in itertools.combinations(range(count), 2):
            diff = diff + _difference_loss(private[i], private[j])
        sim = sum(
            _central_moment_discrepancy(shared[i], shared[j], self.config.cmd_moments)
            for i, j in itertools.combinations(range(count), 2)
        ) / (count * (count - 1) / 2)
        recon = ops.mean(
            ops.square(y_pred["reconstructed"] - y_pred["projected"])
        )
        replicas = distribute.num_replicas()
        return {
            "diff": self.config.diff_weight * diff / replicas,
            "sim": self.config.sim_weight * sim / replicas,
            "recon": self.config.recon_weight * recon / replicas,
        }


def _bidirectional_lstm(frames, units, name, return_sequences=False):
    """A bidirectional LSTM over `[batch, time, features]`: `(sequence,
    forward final h, backward final h)`, the sequence `[batch, time, 2 *
    units]` (both directions concatenated, the backward one back in time
    order) or None.

    What `keras.layers.Bidirectional(LSTM(units, return_state=True))`
    computes, built from two LSTM layers: `Bidirectional` copies the layer
    it wraps through Keras' serialization, which inside `load_model`
    matches objects by `id()`, so a wrapped layer that took the id of an
    object freed earlier in the load could receive that object's copy;
    loading a saved MISA then failed now and then ("Forward layer and
    backward layer should have different `go_backwards` value").
    """
    outputs = []
    for direction in ("forward", "backward"):
        outputs.append(
            keras.layers.LSTM(
                units,
                return_sequences=return_sequences,
                return_state=True,
                go_backwards=direction == "backward",
                name=f"{name}_{direction}",
            )(frames)
        )
    (forward, h_forward, _), (backward, h_backward, _) = outputs
    sequence = None
    if return_sequences:
        sequence = ops.concatenate([forward, ops.flip(backward, axis=1)], axis=-1)
    return sequence, h_forward, h_backward


@register_model(MISAConfig.MODEL_NAME, MISAConfig)
def build_misa(config):
    """Builds an uncompiled `MISAModel` from a `MISAConfig`."""
    return MISAModel(config)
