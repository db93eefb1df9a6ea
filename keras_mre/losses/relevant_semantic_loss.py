"""Relevant semantic loss L_rs (eq 5)."""

import keras
from keras import ops

from keras_mre.errors import ConfigError

_KEYS = ("relevance", "unimodal", "multimodal")


@keras.saving.register_keras_serializable(package="keras_mre")
class RelevantSemanticLoss(keras.losses.Loss):
    """Eq 5: relevance-weighted unimodal cross-entropy plus multimodal CE.

    Per sample `i`, with `M` modalities and `C` classes:

        L_rs(i) = sum_s (1 + H_is) CE(Y_is, P_is) + CE(Y_im, P_im)

    where `H` are the relevance weights (M1), `P_s` the per-modality class
    predictions (M2), `P_m` the multimodal prediction of the relevance module
    and `Y_s`, `Y_m` the unimodal and multimodal labels. A unimodal label
    below 0 (unknown) is replaced by the sample's multimodal label, the
    paper's pseudo-label.

    Gradient through `(1 + H)`: by default (`relevance_gradient=False`) the
    factor is treated as a constant weight of each unimodal term. `H` is then
    learnt from what it is meant to measure, the contribution of a modality
    to the multimodal prediction: through eq 4 into the fused classifier and
    through the relevance-pooled multimodal head `P_m`. With gradient, eq 5
    alone would be lowered by moving weight onto whichever unimodal head has
    the smallest loss (`CE >= 0`, so the factor only ever pushes `H` down on
    hard modalities), a shortcut that rewards the easiest modality instead of
    the relevant one and that competes with the fusion objective.
    `relevance_gradient=True` lets the gradient through.

    Inputs (packing):
        y_true: int labels `[batch, 1 + M]`: column 0 the multimodal label,
            column `1 + s` the unimodal label of modality `s` (-1 unknown).
            `[batch]` (or `[batch, 1]`) means no unimodal labels at all.
        y_pred: either a dict with `"relevance"` `[batch, M]`, `"unimodal"`
            logits `[batch, M, C]` and `"multimodal"` logits `[batch, C]` (the
            MRE model's output dict works as is), or the same three packed
            into one tensor `[batch, M + M * C + C]` by `pack()`, for use as
            a single-output model loss in `compile`. The packed form needs
            `y_true` with its `1 + M` columns.

    Returns:
        Per-sample losses `[batch]`, reduced by the `reduction` argument.

    Args:
        relevance_gradient: let `H` receive gradient through `(1 + H)`.
        reduction, name, dtype: as for `keras.losses.Loss`.
    """

    def __init__(
        self,
        relevance_gradient=False,
        reduction="sum_over_batch_size",
        name="relevant_semantic_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.relevance_gradient = relevance_gradient

    @staticmethod
    def pack(relevance, unimodal, multimodal):
        """Packs the three predictions into `[batch, M + M * C + C]`."""
        batch = ops.shape(relevance)[0]
        return ops.concatenate(
            [relevance, ops.reshape(unimodal, (batch, -1)), multimodal], axis=-1
        )

    def _unpack(self, y_true, y_pred):
        if isinstance(y_pred, dict):
            missing = [k for k in _KEYS if k not in y_pred]
            if missing:
                raise ConfigError(
                    f"RelevantSemanticLoss y_pred: missing key {missing[0]!r}; "
                    f"expected keys {', '.join(_KEYS)}"
                )
            return y_pred["relevance"], y_pred["unimodal"], y_pred["multimodal"]
        if len(y_true.shape) != 2 or y_true.shape[-1] is None or y_true.shape[-1] < 3:
            raise ConfigError(
                f"RelevantSemanticLoss y_true shape {tuple(y_true.shape)}: a "
                "packed y_pred needs labels [batch, 1 + M] with M >= 2"
            )
        modalities = y_true.shape[-1] - 1
        width = y_pred.shape[-1]
        classes, remainder = divmod(width - modalities, modalities + 1)
        if remainder or classes < 2:
            raise ConfigError(
                f"RelevantSemanticLoss y_pred width {width}: not M + M*C + C "
                f"for M={modalities}"
            )
        relevance = y_pred[:, :modalities]
        unimodal = ops.reshape(
            y_pred[:, modalities : modalities * (classes + 1)],
            (-1, modalities, classes),
        )
        multimodal = y_pred[:, modalities * (classes + 1) :]
        return relevance, unimodal, multimodal

    def call(self, y_true, y_pred):
        relevance, unimodal, multimodal = self._unpack(y_true, y_pred)
        labels = ops.cast(y_true, "int32")
        if len(labels.shape) == 2 and labels.shape[-1] == 1:
            labels = labels[:, 0]
        if len(labels.shape) == 1:
            multimodal_labels = labels
            unimodal_labels = ops.zeros_like(relevance, dtype="int32") - 1
        else:
            multimodal_labels = labels[:, 0]
            unimodal_labels = labels[:, 1:]
        unimodal_labels = ops.where(
            unimodal_labels >= 0, unimodal_labels, multimodal_labels[:, None]
        )
        unimodal_ce = ops.sparse_categorical_crossentropy(
            unimodal_labels, unimodal, from_logits=True
        )
        multimodal_ce = ops.sparse_categorical_crossentropy(
            multimodal_labels, multimodal, from_logits=True
        )
        if not self.relevance_gradient:
            relevance = ops.stop_gradient(relevance)
        weights = 1.0 + ops.cast(relevance, unimodal_ce.dtype)
        return ops.sum(weights * unimodal_ce, axis=-1) + multimodal_ce

    def get_config(self):
        config = super().get_config()
        config.update({"relevance_gradient": self.relevance_gradient})
        return config
