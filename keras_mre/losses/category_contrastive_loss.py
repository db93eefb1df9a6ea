"""Category-level contrastive loss L_cnce (eq 6-7)."""

import keras
from keras import ops

from keras_mre import distribute
from keras_mre.errors import ConfigError


@keras.saving.register_keras_serializable(package="keras_mre")
class CategoryContrastiveLoss(keras.losses.Loss):
    """Eq 6-7: InfoNCE across modalities with class-level positives.

    For modalities `s1 != s2` and samples `i`, `j` of the batch,
    `Phi(i, j) = u_i . v_j` is the cosine similarity of sample `i`'s `s1`
    embedding and sample `j`'s `s2` embedding, each normalised exactly as
    `x / |x|`. An embedding whose squared norm is at most `epsilon` (e.g. an
    all-zero one: a modality with no valid frame) counts as the zero vector:
    similarity 0 to everything and a zero gradient (no NaN).
    The normalisation has no other constant in it on purpose: `Phi` must
    not depend on an embedding's length. MRE feeds `S^ = H (.) bag`, and a
    softened norm such as `x / sqrt(|x|^2 + c)` shrinks the vectors of
    modalities with small relevance `H` towards 0, which turns their rows
    of eq 6 uniform (loss `log N`, below that of a misaligned embedding).
    L_cnce could then be lowered by pushing `H` of a modality to 0 instead
    of aligning embeddings, a shortcut through the relevance weights that
    collapses them onto one modality. With the exact cosine the loss and
    its gradient are invariant to `H > 0`. Eq 6 gives the row-softmax
    probability

        P_ij(s1, s2) = exp(Phi(i, j) / tau) / sum_k exp(Phi(i, k) / tau).

    Pairs of the same class (`i` with itself included) are positives, all
    other pairs negatives. Eq 7, with `N_p` / `N_n` the numbers of positive
    / negative pairs of the batch:

        l(s1, s2) = -1/N_p sum_pos log P_ij - 1/N_n sum_neg log(1 - P_ij)
        L_cnce = sum over unordered pairs {s1, s2} of
                 (l(s1, s2) + l(s2, s1)) / 2

    A mean over zero pairs counts as 0 (a batch of one class has no
    negatives); every sample is its own positive, so classes with a single
    sample are fine. `log(1 - P)` is clipped at `log(1e-7)`.

    Per-sample values: the loss of the batch is written as a sum over anchors
    `i`; sample `i` contributes its positive terms divided by the mean number
    of positives per anchor `N_p / N` and its negative terms divided by
    `N_n / N`, so that the mean of the `[batch]` values is exactly eq 7.

    Under `tf.distribute` (MirroredStrategy), the embeddings and labels of
    all replicas are gathered (`keras_mre.distribute.all_gather`): each
    replica's samples are anchors against the whole global batch and `N`,
    `N_p`, `N_n` are global, so the mean over the global batch equals the
    single-device loss.

    Inputs (packing):
        y_true: class ids `[batch]` or `[batch, 1]`.
        y_pred: embeddings `[batch, M, d]` with `M >= 2` (MRE passes its
            relevance-weighted embeddings S^ of eq 4; the exact cosine makes
            the loss independent of the weights' scale, so it sends no
            gradient to H).

    Args:
        temperature: `tau` of eq 6, positive.
        epsilon: squared norm at or below which an embedding counts as the
            zero vector (above), positive; default 1e-12.
        reduction, name, dtype: as for `keras.losses.Loss`.
    """

    def __init__(
        self,
        temperature=0.1,
        epsilon=1e-12,
        reduction="sum_over_batch_size",
        name="category_contrastive_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not temperature > 0:
            raise ConfigError(
                f"temperature={temperature!r}: expected a positive number"
            )
        if not epsilon > 0:
            raise ConfigError(f"epsilon={epsilon!r}: expected a positive number")
        self.temperature = temperature
        self.epsilon = epsilon

    def call(self, y_true, y_pred):
        if len(y_pred.shape) != 3 or y_pred.shape[1] is None or y_pred.shape[1] < 2:
            raise ConfigError(
                f"CategoryContrastiveLoss y_pred shape {tuple(y_pred.shape)}: "
                "expected embeddings [batch, M, d] with M >= 2"
            )
        labels = ops.reshape(ops.cast(y_true, y_pred.dtype), (-1,))
        embeddings = self._normalize(y_pred)

        all_embeddings = distribute.all_gather(embeddings)
        all_labels = distribute.all_gather(labels)
        total = ops.cast(ops.shape(all_labels)[0], y_pred.dtype)
        positive = ops.cast(labels[:, None] == all_labels[None, :], y_pred.dtype)
        negative = 1.0 - positive
        pairs_positive = ops.sum(
            ops.cast(all_labels[:, None] == all_labels[None, :], y_pred.dtype)
        )
        pairs_negative = total * total - pairs_positive
        # Dividing by the mean count per anchor makes the batch mean exact.
        positive_scale = total / ops.maximum(pairs_positive, 1.0)
        negative_scale = total / ops.maximum(pairs_negative, 1.0)

        # Every ordered modality pair (a, b) at once: logits[a, b, i, j] =
        # Phi(sample i's modality a, sample j's modality b) / tau, from one
        # 2-D product of all (sample, modality) rows; the M pairs with
        # a == b are computed too and masked out, which costs less than
        # M * (M - 1) separate small products. (Plain products and sums:
        # TensorFlow's CPU einsum of these small shapes took a third to a
        # half longer, forward and gradient.)
        modalities, width = y_pred.shape[1], ops.shape(y_pred)[2]
        similarity = ops.matmul(
            ops.reshape(embeddings, (-1, width)),
            ops.transpose(ops.reshape(all_embeddings, (-1, width))),
        )
        logits = ops.transpose(
            ops.reshape(
                similarity, (-1, modalities, ops.shape(all_labels)[0], modalities)
            ),
            (1, 3, 0, 2),
        )
        log_p = ops.log_softmax(logits / self.temperature, axis=-1)
        log_not_p = ops.log(ops.maximum(1.0 - ops.exp(log_p), 1e-7))
        terms = -ops.sum(
            log_p * (positive_scale * positive)
            + log_not_p * (negative_scale * negative),
            axis=-1,
        )
        different = 1.0 - ops.eye(modalities, dtype=y_pred.dtype)
        # Each unordered pair {s1, s2} counts its two directions with 1/2.
        return 0.5 * ops.sum(terms * different[:, :, None], axis=(0, 1))

    def _normalize(self, x):
        """`x / |x|` along the last axis; 0 where `|x|^2 <= epsilon`."""
        squared = ops.sum(ops.square(x), axis=-1, keepdims=True)
        # The maximum keeps the unused branch finite, so `where` gives the
        # zero vector a zero gradient rather than NaN.
        unit = x * ops.rsqrt(ops.maximum(squared, self.epsilon))
        return ops.where(squared > self.epsilon, unit, ops.zeros_like(x))

    def get_config(self):
        config = super().get_config()
        config.update({"temperature": self.temperature, "epsilon": self.epsilon})
        return config
