import numpy as np
import pytest

from keras_mre.metrics import WeightedF1Score


def numpy_weighted_f1(labels, predictions, num_classes):
    total, support_sum = 0.0, 0
    for c in range(num_classes):
        tp = np.sum((predictions == c) & (labels == c))
        fp = np.sum((predictions == c) & (labels != c))
        fn = np.sum((predictions != c) & (labels == c))
        support = np.sum(labels == c)
        f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0
        total += support * f1
        support_sum += support
    return total / support_sum


def test_matches_numpy_weighted_f1_over_batches():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 50)
    scores = rng.random((50, 4)).astype("float32")
    scores[np.arange(50), labels] += rng.random(50) * (rng.random(50) < 0.6)
    metric = WeightedF1Score(4)
    metric.update_state(labels[:20], scores[:20])
    metric.update_state(labels[20:], scores[20:])
    expected = numpy_weighted_f1(labels, scores.argmax(-1), 4)
    assert float(metric.result()) == pytest.approx(expected, rel=1e-6)
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_sample_weights_and_unknown_labels():
    metric = WeightedF1Score(3)
    labels = np.array([0, 1, 2, -1])
    scores = np.eye(3)[[0, 1, 1, 2]].astype("float32")
    metric.update_state(labels, scores, sample_weight=np.array([1.0, 1.0, 0.0, 1.0]))
    assert float(metric.result()) == pytest.approx(1.0)
    restored = WeightedF1Score.from_config(metric.get_config())
    assert restored.num_classes == 3 and restored.name == "f1_weighted"
