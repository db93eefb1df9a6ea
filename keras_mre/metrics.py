"""Metrics reported by every model: weighted F1 on integer class labels."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mre")
class WeightedF1Score(keras.metrics.Metric):
    """Support-weighted F1 over classes, from int labels and class scores.

    The prediction is the argmax of `y_pred`. Per class `c`,
    `F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)` (0 when the class never occurs
    and is never predicted); the result is `sum_c support_c F1_c /
    sum_c support_c`, the same as scikit-learn's
    `f1_score(average="weighted", zero_division=0)`.

    Args:
        num_classes: number of classes `C`.
        name, dtype: as for `keras.metrics.Metric`.

    `update_state(y_true, y_pred, sample_weight=None)`: `y_true` int labels
    `[batch]` (labels outside `[0, C)` are ignored), `y_pred` scores
    `[batch, C]`.
    """

    def __init__(self, num_classes, name="f1_weighted", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = num_classes
        self.true_positives = self.add_variable(
            shape=(num_classes,), initializer="zeros", name="true_positives"
        )
        self.predicted = self.add_variable(
            shape=(num_classes,), initializer="zeros", name="predicted"
        )
        self.support = self.add_variable(
            shape=(num_classes,), initializer="zeros", name="support"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        predictions = ops.argmax(y_pred, axis=-1)
        true_one_hot = ops.one_hot(labels, self.num_classes, dtype=self.dtype)
        predicted_one_hot = ops.one_hot(predictions, self.num_classes, dtype=self.dtype)
        valid = ops.cast((labels >= 0) & (labels < self.num_classes), self.dtype)
        weight = valid
        if sample_weight is not None:
            weight = weight * ops.reshape(ops.cast(sample_weight, self.dtype), (-1,))
        weight = weight[:, None]
        self.true_positives.assign_add(
            ops.sum(true_one_hot * predicted_one_hot * weight, axis=0)
        )
        self.predicted.assign_add(ops.sum(predicted_one_hot * weight, axis=0))
        self.support.assign_add(ops.sum(true_one_hot * weight, axis=0))

    def result(self):
        denominator = self.predicted + self.support
        f1 = ops.divide_no_nan(2.0 * self.true_positives, denominator)
        return ops.divide_no_nan(ops.sum(f1 * self.support), ops.sum(self.support))

    def reset_state(self):
        for variable in (self.true_positives, self.predicted, self.support):
            variable.assign(ops.zeros(variable.shape, variable.dtype))

    def get_config(self):
        return {"num_classes": self.num_classes, "name": self.name, "dtype": self.dtype}
