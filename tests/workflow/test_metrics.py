"""Numpy metrics of keras_mre.evaluation against hand-computed values."""

import math

import numpy as np
import pytest

from keras_mre import evaluation

Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0]


def test_confusion_matrix_counts():
    matrix = evaluation.confusion_matrix(Y_TRUE, Y_PRED, 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="y_true has 2 entries but y_pred has 3"):
        evaluation.confusion_matrix([0, 1], [0, 1, 1], 2)
    with pytest.raises(ValueError, match=r"y_pred holds class ids outside \[0, 2\)"):
        evaluation.confusion_matrix([0, 1], [0, 2], 2)


def test_classification_metrics_by_hand():
    result = evaluation.classification_metrics(Y_TRUE, Y_PRED, ["a", "b", "c"])
    # precision = diag / column sums (2, 3, 1); recall = diag / row sums (2, 2, 2)
    assert result["accuracy"] == pytest.approx(4 / 6)
    per_class = result["per_class"]
    assert per_class["a"]["precision"] == pytest.approx(0.5)
    assert per_class["b"]["precision"] == pytest.approx(2 / 3)
    assert per_class["c"]["precision"] == pytest.approx(1.0)
    assert per_class["a"]["recall"] == pytest.approx(0.5)
    assert per_class["b"]["recall"] == pytest.approx(1.0)
    assert per_class["c"]["recall"] == pytest.approx(0.5)
    assert per_class["a"]["f1"] == pytest.approx(0.5)
    assert per_class["b"]["f1"] == pytest.approx(0.8)
    assert per_class["c"]["f1"] == pytest.approx(2 / 3)
    assert per_class["b"]["support"] == 2
    assert result["f1_weighted"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert result["f1_macro"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert result["num_examples"] == 6


def test_weighted_f1_uses_support_and_zero_division():
    # Class 1 is never predicted (precision 0 -> F1 0); supports 3 and 1.
    y_true = [0, 0, 0, 1]
    y_pred = [0, 0, 0, 0]
    # class 0: p = 3/4, r = 1, F1 = 6/7; class 1: F1 = 0
    assert evaluation.weighted_f1(y_true, y_pred, 2) == pytest.approx(0.75 * 6 / 7)
    result = evaluation.classification_metrics(y_true, y_pred, ["x", "y"])
    assert result["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_mosei_regression_metrics_by_hand():
    truth = [-2.0, -0.5, 0.0, 0.6, 1.4, 2.6]
    pred = [-1.5, 0.2, -0.3, 0.4, 2.4, 1.0]
    result = evaluation.mosei_regression_metrics(pred, truth)
    assert result["Has0_acc_2"] == pytest.approx(4 / 6)
    # Has0 confusion [[1, 1], [1, 3]]: F1 0.5 (support 2) and 0.75 (support 4)
    assert result["Has0_F1_score"] == pytest.approx((2 * 0.5 + 4 * 0.75) / 6)
    assert result["num_nonzero"] == 5
    assert result["Non0_acc_2"] == pytest.approx(0.8)
    # Non0 confusion [[1, 1], [0, 3]]: F1 2/3 (support 2) and 6/7 (support 3)
    assert result["Non0_F1_score"] == pytest.approx((2 * 2 / 3 + 3 * 6 / 7) / 5)
    # Rounded (half to even) truth [-2, 0, 0, 1, 1, 3] vs pred [-2, 0, 0, 0, 2, 1]
    assert result["Mult_acc_7"] == pytest.approx(0.5)
    # Clipped to +-2: truth [-2, 0, 0, 1, 1, 2] vs pred [-2, 0, 0, 0, 2, 1]
    assert result["Mult_acc_5"] == pytest.approx(0.5)
    assert result["MAE"] == pytest.approx(4.3 / 6)
    t, p = np.array(truth), np.array(pred)
    n = len(t)
    pearson = (n * (t * p).sum() - t.sum() * p.sum()) / math.sqrt(
        (n * (t * t).sum() - t.sum() ** 2) * (n * (p * p).sum() - p.sum() ** 2)
    )
    assert result["Corr"] == pytest.approx(pearson)


def test_sims_regression_metrics_by_hand():
    truth = [-0.9, -0.4, -0.05, 0.0, 0.3, 0.8]
    pred = [-0.6, -0.8, 0.05, 0.2, 0.5, 1.3]  # 1.3 is clipped to 1.0
    result = evaluation.sims_regression_metrics(pred, truth)
    assert result["Mult_acc_2"] == pytest.approx(4 / 6)
    assert result["Mult_acc_3"] == pytest.approx(5 / 6)
    assert result["Mult_acc_5"] == pytest.approx(3 / 6)
    assert result["F1_score"] == pytest.approx(2 / 3)
    assert result["MAE"] == pytest.approx(1.4 / 6)


def test_sims_interval_edges_are_closed_on_the_right():
    # -0.1 belongs to (-0.7, -0.1]; 0.1 to (-0.1, 0.1]; 0 is negative in Acc-2.
    result = evaluation.sims_regression_metrics([-0.1, 0.1, 0.0], [-0.2, 0.0, -0.5])
    assert result["Mult_acc_5"] == pytest.approx(2 / 3)
    assert result["Mult_acc_3"] == pytest.approx(2 / 3)
    # Acc-2: 0.0 counts as negative (agrees with -0.5), 0.1 vs 0.0 disagree.
    assert result["Mult_acc_2"] == pytest.approx(2 / 3)


def test_regression_metrics_skip_unknown_and_add_sims_scale():
    result = evaluation.regression_metrics([0.5, -0.5, 0.2], [0.4, float("nan"), 0.1])
    assert result["num_skipped"] == 1
    assert result["num_examples"] == 2
    assert "sims" in result
    wide = evaluation.regression_metrics([0.5, -2.0], [1.5, -2.5])
    assert "sims" not in wide


def test_class_score_means_and_expected_scores():
    means = evaluation.class_score_means([0, 0, 1, 2], [1.0, 3.0, float("nan"), -1.0], 4)
    np.testing.assert_allclose(means, [2.0, np.nan, -1.0, np.nan])
    scores = evaluation.expected_scores([[0.5, 0.2, 0.3, 0.0]], means)
    # classes 1 and 3 have no score: (0.5 * 2 + 0.3 * -1) / 0.8
    np.testing.assert_allclose(scores, [0.875])
    with pytest.raises(ValueError, match="no class has a mean score"):
        evaluation.expected_scores([[1.0]], [float("nan")])


def test_relevance_analysis_by_hand():
    relevance = np.array([[0.2, 0.8], [0.4, 0.6], [0.9, 0.1], [0.7, 0.3]])
    logits = np.zeros((4, 2, 2))
    logits[[0], 0, 0] = 1  # modality a predicts 0, 1, 1, 1
    logits[[1, 2, 3], 0, 1] = 1
    logits[:, 1, 0] = 1  # modality b always predicts 0
    result = evaluation.relevance_analysis(
        [0, 0, 1, 1], ["x", "y"], ["a", "b"], relevance=relevance, unimodal_logits=logits,
        unimodal_labels={"a": np.array([0, -1, 1, 0])},
    )
    assert result["mean_relevance"]["x"] == pytest.approx({"a": 0.3, "b": 0.7})
    assert result["mean_relevance"]["y"] == pytest.approx({"a": 0.8, "b": 0.2})
    assert result["agreement"]["a"]["overall"] == pytest.approx(0.75)
    assert result["agreement"]["a"]["per_class"] == pytest.approx({"x": 0.5, "y": 1.0})
    assert result["agreement"]["b"]["overall"] == pytest.approx(0.5)
    assert result["agreement"]["b"]["confusion_matrix"] == [[2, 0], [2, 0]]
    assert result["label_agreement"]["a"]["num_known"] == 3
    assert result["label_agreement"]["a"]["labels_agree"] == pytest.approx(2 / 3)
    assert result["label_agreement"]["a"]["m2_accuracy"] == pytest.approx(2 / 3)
    assert "b" not in result["label_agreement"]


def test_summarize_seeds_mean_and_std():
    per_seed = {
        "1111": {"accuracy": 0.6, "f1_weighted": 0.5, "f1_macro": 0.4},
        "1112": {"accuracy": 0.8, "f1_weighted": 0.7, "f1_macro": 0.6},
    }
    summary = evaluation.summarize_seeds(per_seed)
    assert summary["accuracy"]["mean"] == pytest.approx(0.7)
    assert summary["accuracy"]["std"] == pytest.approx(0.1)
    assert summary["f1_weighted"]["values"] == [0.5, 0.7]


def test_write_json_turns_nan_into_null(tmp_path):
    import json

    path = tmp_path / "m.json"
    evaluation.write_json(str(path), {"Corr": float("nan"), "n": np.int64(3), "x": np.float32(0.5)})
    assert json.loads(path.read_text()) == {"Corr": None, "n": 3, "x": 0.5}
