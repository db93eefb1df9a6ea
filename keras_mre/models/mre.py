"""The MRE network (Multimodal Relevance Estimation, paper section 3)."""

import keras
from keras import ops

from keras_mre.config import MREConfig
from keras_mre.data import schema
from keras_mre.layers import LowRankFusion
from keras_mre.layers import RelevanceAttention
from keras_mre.losses import CategoryContrastiveLoss
from keras_mre.losses import RelevantSemanticLoss
from keras_mre.models.emotion_model import EmotionModel
from keras_mre.models.lmf import encode_modalities
from keras_mre.models.registry import register_model


@keras.saving.register_keras_serializable(package="keras_mre")
class MREModel(EmotionModel):
    """Multimodal relevance estimation network.

    Graph, for modalities `m` in `config.feature_dims` order:

    1. Encoders (3.1): `LSTMEncoder` for `config.sequence_modalities`
       (paper: text), `MaskedMeanDNNEncoder` (mean over valid frames, then a
       `dnn_layers`-deep DNN) for the others; each gives `[batch, d]`,
       stacked into the bag `[batch, M, d]`.
    2. `RelevanceAttention` (3.2, eq 3-4): relevance weights H `[batch, M]`,
       per-modality logits `[batch, M, C]`, multimodal logits `[batch, C]`
       and the weighted embeddings S^ = H (.) bag.
    3. `LowRankFusion` (eq 1-2) of S^ (after dropout) to class logits.

    Outputs: `"emotion"` probabilities `[batch, C]`, `"logits"` `[batch, C]`,
    `"relevance"` H `[batch, M]`, `"unimodal"` logits `[batch, M, C]`,
    `"multimodal"` logits `[batch, C]` (P_m of eq 5) and `"embeddings"` S^
    `[batch, M, d]`.

    Loss (eq 8): `ce_weight * CE(emotion)` + `rs_weight * L_rs` (eq 5,
    `RelevantSemanticLoss`, labels `emotion_<m>` where given, else `emotion`)
    + `cnce_weight * L_cnce` (eq 6-7, `CategoryContrastiveLoss` on S^), the
    last two switched by `use_rs_loss` / `use_cnce_loss`.

    Args:
        config: an `MREConfig`, its dict form, or None for the defaults.
    """

    config_class = MREConfig

    def __init__(self, config=None, **kwargs):
        config = self.resolve_config(config)
        d = config.hidden_dim
        inputs = self.make_inputs(config)
        encoded = encode_modalities(config, inputs, d)
        bag = ops.stack(encoded, axis=1)
        relevance = RelevanceAttention(
            config.num_classes,
            num_heads=config.attention_heads,
            name="relevance_attention",
        )(bag)
        weighted = keras.layers.Dropout(config.dropout, name="fusion_dropout")(
            relevance["embeddings"]
        )
        logits = LowRankFusion(config.num_classes, rank=config.rank, name="fusion")(
            weighted
        )
        probabilities = keras.layers.Softmax(name="probabilities")(logits)
        outputs = {
            schema.OUTPUT_PROBABILITIES: probabilities,
            "logits": logits,
            schema.OUTPUT_RELEVANCE: relevance["relevance"],
            schema.OUTPUT_UNIMODAL: relevance["unimodal"],
            "multimodal": relevance["multimodal"],
            "embeddings": relevance["embeddings"],
        }
        super().__init__(config, inputs, outputs, **kwargs)
        self.relevant_semantic_loss = RelevantSemanticLoss(
            relevance_gradient=config.relevance_gradient
        )
        self.category_contrastive_loss = CategoryContrastiveLoss(
            temperature=config.temperature
        )

    def auxiliary_loss_names(self):
        names = []
        if self.config.use_rs_loss:
            names.append("rs")
        if self.config.use_cnce_loss:
            names.append("cnce")
        return names

    def _packed_labels(self, y):
        """`[batch, 1 + M]`: multimodal label, then unimodal labels or -1."""
        if not isinstance(y, dict):
            labels = ops.reshape(ops.cast(y, "int32"), (-1,))
            return labels
        labels = ops.reshape(ops.cast(y[schema.LABEL_KEY], "int32"), (-1,))
        columns = [labels]
        for modality in self.config.modalities:
            key = schema.unimodal_label_key(modality)
            if key in y:
                columns.append(ops.reshape(ops.cast(y[key], "int32"), (-1,)))
            else:
                columns.append(ops.full_like(labels, schema.UNKNOWN_LABEL))
        return ops.stack(columns, axis=1)

    def auxiliary_losses(self, x, y, y_pred, sample_weight=None, training=True):
        terms = {}
        if self.config.use_rs_loss:
            terms["rs"] = self.config.rs_weight * self.relevant_semantic_loss(
                self._packed_labels(y), y_pred, sample_weight
            )
        if self.config.use_cnce_loss:
            terms["cnce"] = self.config.cnce_weight * self.category_contrastive_loss(
                self._labels(y), y_pred["embeddings"], sample_weight
            )
        return terms


@register_model(MREConfig.MODEL_NAME, MREConfig)
def build_mre(config):
    """Builds an uncompiled `MREModel` from an `MREConfig`."""
    return MREModel(config)
