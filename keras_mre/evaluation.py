"""Evaluation of trained runs: classification metrics, MMSA metrics, relevance.

The metric functions are plain numpy so that they can be checked by hand and
reused on predictions from anywhere. `evaluate_run` applies them to a run
directory written by `keras_mre.training.train` and writes
`RUN/eval/<split>/`:

- `metrics.json`: `accuracy`, `f1_weighted`, `f1_macro` (fractions in
  [0, 1]), `per_class` precision / recall / F1 / support, the confusion
  matrix, and, for data sets with regression scores, the MMSA metrics (see
  `regression_metrics`).
- `confusion_matrix.png`: row-normalised confusion matrix.
- `relevance.json` / `relevance.png`: the analysis of the paper's Figure 4
  (see `relevance_analysis`).

How a classifier gets MMSA's regression metrics: the MMSA metrics compare a
predicted sentiment score with the true score. An MRE model predicts class
probabilities `p_c`, not a score, so the predicted score of a clip is the
expected class score `sum_c p_c * mu_c`, where `mu_c` is the mean true score
of the training clips of class `c` (read from the data set's `train` split).
All MMSA metrics are then computed on that predicted score exactly as MMSA's
`metricsTop.py` computes them. A model that outputs `"score"` itself is
evaluated on that output instead.
"""

import dataclasses
import json
import math
import os

import numpy as np

from keras_mre.data import schema
from keras_mre.errors import DataError
from keras_mre.errors import RunError

VALIDATION_SPLITS = ("valid", "validation", "val", "dev")


# --------------------------------------------------------------------------
# Classification metrics
# --------------------------------------------------------------------------


def confusion_matrix(y_true, y_pred, num_classes):
    """Counts `matrix[i, j]` of clips with true class `i` predicted as `j`.

    Args:
        y_true: Int array `[N]` of true class ids.
        y_pred: Int array `[N]` of predicted class ids.
        num_classes: Number of classes `C`.

    Returns:
        Int64 array `[C, C]`.
    """
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(
            f"y_true has {y_true.shape[0]} entries but y_pred has {y_pred.shape[0]}"
        )
    for name, values in (("y_true", y_true), ("y_pred", y_pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"{name} holds class ids outside [0, {num_classes}): "
                f"min {values.min()}, max {values.max()}"
            )
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def _safe_divide(numerator, denominator):
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros_like(numerator)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def precision_recall_f1(matrix):
    """Per-class precision, recall, F1 and support from a confusion matrix.

    A class that is never predicted has precision 0; a class with no true
    clips has recall 0 (scikit-learn's `zero_division=0`).

    Returns:
        Four float arrays `[C]`: precision, recall, f1, support.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    true_positive = np.diag(matrix)
    predicted = matrix.sum(axis=0)
    support = matrix.sum(axis=1)
    precision = _safe_divide(true_positive, predicted)
    recall = _safe_divide(true_positive, support)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    return precision, recall, f1, support


def weighted_f1(y_true, y_pred, num_classes=None):
    """F1 averaged over classes weighted by their true support.

    Equals scikit-learn's `f1_score(y_true, y_pred, average="weighted")`.
    """
    y_true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    y_pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if y_true.size == 0:
        return float("nan")
    if num_classes is None:
        num_classes = int(max(y_true.max(), y_pred.max())) + 1
    _, _, f1, support = precision_recall_f1(
        confusion_matrix(y_true, y_pred, num_classes)
    )
    return float(np.sum(f1 * support) / np.sum(support))


def classification_metrics(y_true, y_pred, class_names):
    """Accuracy, weighted / macro F1 and per-class scores.

    Args:
        y_true: Int array `[N]` of true class ids.
        y_pred: Int array `[N]` of predicted class ids.
        class_names: List of `C` class names; class id `i` is `class_names[i]`.

    Returns:
        Dict with `num_examples`, `accuracy`, `f1_weighted`, `f1_macro`
        (fractions), `per_class` (name -> precision, recall, f1, support) and
        `confusion_matrix` (list of lists, rows = true class).
    """
    num_classes = len(class_names)
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    precision, recall, f1, support = precision_recall_f1(matrix)
    total = int(matrix.sum())
    if total == 0:
        raise ValueError("no examples to evaluate")
    present = support > 0
    return {
        "num_examples": total,
        "accuracy": float(np.trace(matrix) / total),
        "f1_weighted": float(np.sum(f1 * support) / total),
        "f1_macro": float(np.mean(f1[present])) if present.any() else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": matrix.tolist(),
    }


# --------------------------------------------------------------------------
# MMSA regression metrics
# --------------------------------------------------------------------------


def _binary_accuracy_f1(truth, pred):
    truth = np.asarray(truth, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    if truth.size == 0:
        return float("nan"), float("nan")
    return float(np.mean(truth == pred)), weighted_f1(truth, pred, 2)


def _pearson(pred, truth):
    if pred.size < 2 or np.std(pred) == 0 or np.std(truth) == 0:
        return float("nan")
    return float(np.corrcoef(pred, truth)[0, 1])


def _multiclass_accuracy(pred, truth):
    # MMSA rounds both sides with numpy's round-half-to-even.
    return float(np.mean(np.round(pred) == np.round(truth)))


def mosei_regression_metrics(pred, truth):
    """MMSA's MOSI / MOSEI metrics of predicted vs true sentiment scores.

    - `Has0_acc_2`, `Has0_F1_score`: classes `score >= 0` vs `< 0`, accuracy
      and weighted F1.
    - `Non0_acc_2`, `Non0_F1_score`: clips with true score exactly 0 are
      dropped, then classes `score > 0` vs `<= 0`.
    - `Mult_acc_5`, `Mult_acc_7`: both sides clipped to [-2, 2] / [-3, 3]
      and rounded to integers (half to even), then accuracy.
    - `MAE`: mean absolute error; `Corr`: Pearson correlation (NaN when a
      side is constant).

    Args:
        pred: Float array `[N]` of predicted scores.
        truth: Float array `[N]` of true scores.

    Returns:
        Dict of the eight metrics above plus `num_examples` and `num_nonzero`.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    nonzero = truth != 0
    has0_acc, has0_f1 = _binary_accuracy_f1(truth >= 0, pred >= 0)
    non0_acc, non0_f1 = _binary_accuracy_f1(truth[nonzero] > 0, pred[nonzero] > 0)
    return {
        "num_examples": int(truth.size),
        "num_nonzero": int(nonzero.sum()),
        "Has0_acc_2": has0_acc,
        "Has0_F1_score": has0_f1,
        "Non0_acc_2": non0_acc,
        "Non0_F1_score": non0_f1,
        "Mult_acc_5": _multiclass_accuracy(np.clip(pred, -2, 2), np.clip(truth, -2, 2)),
        "Mult_acc_7": _multiclass_accuracy(np.clip(pred, -3, 3), np.clip(truth, -3, 3)),
        "MAE": float(np.mean(np.abs(pred - truth))),
        "Corr": _pearson(pred, truth),
    }


def _bucketize(values, edges):
    # Interval i is (edges[i], edges[i + 1]], as MMSA's SIMS metrics use.
    return np.searchsorted(np.asarray(edges[1:-1]), values, side="left")


def sims_regression_metrics(pred, truth):
    """MMSA's SIMS metrics (scores in [-1, 1]).

    Both sides are clipped to [-1, 1] and cut into classes with intervals
    closed on the right: 2 classes at 0 (0 is negative), 3 classes at
    -0.1 / 0.1, 5 classes at -0.7 / -0.1 / 0.1 / 0.7. `F1_score` is the
    weighted F1 of the 2-class cut.

    Returns:
        Dict with `Mult_acc_2`, `Mult_acc_3`, `Mult_acc_5`, `F1_score`,
        `MAE`, `Corr` and `num_examples`.
    """
    pred = np.clip(np.asarray(pred, dtype=np.float64).reshape(-1), -1, 1)
    truth = np.clip(np.asarray(truth, dtype=np.float64).reshape(-1), -1, 1)
    result = {"num_examples": int(truth.size)}
    cuts = {
        2: [-1.01, 0.0, 1.01],
        3: [-1.01, -0.1, 0.1, 1.01],
        5: [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01],
    }
    for classes, edges in cuts.items():
        result[f"Mult_acc_{classes}"] = float(
            np.mean(_bucketize(pred, edges) == _bucketize(truth, edges))
        )
    result["F1_score"] = weighted_f1(
        _bucketize(truth, cuts[2]), _bucketize(pred, cuts[2]), 2
    )
    result["MAE"] = float(np.mean(np.abs(pred - truth)))
    result["Corr"] = _pearson(pred, truth)
    return result


def regression_metrics(pred, truth):
    """MMSA metrics of predicted vs true scores; NaN true scores are skipped.

    Always computes `mosei_regression_metrics`; when every true score lies
    in [-1, 1] (SIMS' scale) also adds `sims_regression_metrics` under the
    key `"sims"`.

    Returns:
        Dict of metrics, with `num_skipped` counting clips without a score.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    truth = np.asarray(truth, dtype=np.float64).reshape(-1)
    known = np.isfinite(truth) & np.isfinite(pred)
    result = {"num_skipped": int((~known).sum())}
    if not known.any():
        result["num_examples"] = 0
        return result
    pred, truth = pred[known], truth[known]
    result.update(mosei_regression_metrics(pred, truth))
    if np.all(np.abs(truth) <= 1.0):
        result["sims"] = sims_regression_metrics(pred, truth)
    return result


def class_score_means(labels, scores, num_classes):
    """Mean true score of each class, `mu_c`; NaN for a class with no score.

    Args:
        labels: Int array `[N]` of class ids.
        scores: Float array `[N]` of scores (NaN = unknown, skipped).
        num_classes: Number of classes `C`.

    Returns:
        Float64 array `[C]`.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    known = np.isfinite(scores)
    sums = np.bincount(labels[known], weights=scores[known], minlength=num_classes)
    counts = np.bincount(labels[known], minlength=num_classes)
    means = np.full(num_classes, np.nan)
    np.divide(sums, counts, out=means, where=counts > 0)
    return means


def expected_scores(probabilities, class_means):
    """Predicted score of a classifier: `sum_c p_c * mu_c` per clip.

    Classes without a mean score are left out and the remaining
    probabilities renormalised.

    Args:
        probabilities: Float array `[N, C]`.
        class_means: Float array `[C]` from `class_score_means`.

    Returns:
        Float64 array `[N]`.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    class_means = np.asarray(class_means, dtype=np.float64)
    known = np.isfinite(class_means)
    if not known.any():
        raise ValueError("no class has a mean score")
    weights = probabilities[:, known]
    total = weights.sum(axis=1)
    return _safe_divide(weights @ class_means[known], total)


# --------------------------------------------------------------------------
# Relevance analysis (paper Figure 4)
# --------------------------------------------------------------------------


def relevance_analysis(
    labels,
    class_names,
    modalities,
    relevance=None,
    unimodal_logits=None,
    unimodal_labels=None,
):
    """Which modality the model trusts, per class (the paper's Figure 4).

    Args:
        labels: Int array `[N]` of multimodal class ids.
        class_names: List of `C` class names.
        modalities: List of `M` modality names (the model's order).
        relevance: Optional float array `[N, M]`, relevance weights H.
        unimodal_logits: Optional float array `[N, M, C]`, the M2 heads.
        unimodal_labels: Optional dict modality -> int array `[N]` of
            unimodal labels (-1 unknown).

    Returns:
        Dict with
        - `mean_relevance[class][modality]`: mean H over the clips of a true
          class, and `mean_relevance_overall[modality]`;
        - `agreement[modality]`: fraction of clips whose M2 prediction for
          that modality equals the multimodal label, overall and
          `per_class`, plus `confusion_matrix` (rows: multimodal label,
          columns: M2 prediction), i.e. the paper's Figure 4(c)(d) built
          from predictions;
        - `label_agreement[modality]`: where unimodal labels are known, the
          fraction that equal the multimodal label (the data's own
          relevance) and `m2_accuracy`, the M2 head's accuracy on them.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    num_classes = len(class_names)
    per_class_index = {name: labels == i for i, name in enumerate(class_names)}
    result = {
        "num_examples": int(labels.size),
        "class_names": list(class_names),
        "modalities": list(modalities),
        "class_counts": {name: int(mask.sum()) for name, mask in per_class_index.items()},
    }
    if relevance is not None:
        relevance = np.asarray(relevance, dtype=np.float64)
        result["mean_relevance"] = {
            name: {
                m: (float(relevance[mask, j].mean()) if mask.any() else None)
                for j, m in enumerate(modalities)
            }
            for name, mask in per_class_index.items()
        }
        result["mean_relevance_overall"] = {
            m: float(relevance[:, j].mean()) for j, m in enumerate(modalities)
        }
    if unimodal_logits is not None:
        predictions = np.argmax(np.asarray(unimodal_logits), axis=-1)
        agreement = {}
        for j, m in enumerate(modalities):
            agrees = predictions[:, j] == labels
            agreement[m] = {
                "overall": float(agrees.mean()),
                "per_class": {
                    name: (float(agrees[mask].mean()) if mask.any() else None)
                    for name, mask in per_class_index.items()
                },
                "confusion_matrix": confusion_matrix(
                    labels, predictions[:, j], num_classes
                ).tolist(),
            }
        result["agreement"] = agreement
    if unimodal_labels:
        label_agreement = {}
        for j, m in enumerate(modalities):
            if m not in unimodal_labels:
                continue
            own = np.asarray(unimodal_labels[m], dtype=np.int64).reshape(-1)
            known = own >= 0
            if not known.any():
                continue
            entry = {
                "num_known": int(known.sum()),
                "labels_agree": float(np.mean(own[known] == labels[known])),
            }
            if unimodal_logits is not None:
                entry["m2_accuracy"] = float(np.mean(predictions[known, j] == own[known]))
            label_agreement[m] = entry
        if label_agreement:
            result["label_agreement"] = label_agreement
    return result


# --------------------------------------------------------------------------
# Running a model over a split
# --------------------------------------------------------------------------


@dataclasses.dataclass
class Predictions:
    """Model outputs and labels over one split, as numpy arrays.

    Attributes:
        probabilities: `[N, C]` class probabilities.
        labels: `[N]` multimodal class ids.
        relevance: `[N, M]` relevance weights, or None.
        unimodal: `[N, M, C]` per-modality logits, or None.
        unimodal_labels: Dict modality -> `[N]` unimodal labels (-1 unknown).
        scores: `[N]` true regression scores (NaN unknown), or None.
        predicted_scores: `[N]` scores output by the model, or None.
    """

    probabilities: np.ndarray
    labels: np.ndarray
    relevance: np.ndarray | None = None
    unimodal: np.ndarray | None = None
    unimodal_labels: dict = dataclasses.field(default_factory=dict)
    scores: np.ndarray | None = None
    predicted_scores: np.ndarray | None = None

    @property
    def predicted_classes(self):
        """`[N]` argmax class ids."""
        return np.argmax(self.probabilities, axis=-1)


def predict_dataset(model, dataset, modalities):
    """Run `model` over a `(features, labels)` dataset and collect numpy arrays.

    Args:
        model: A keras-mre model (outputs dict with `"emotion"`).
        dataset: A `tf.data.Dataset` of `(features, labels)` batches.
        modalities: The model's modality order.

    Returns:
        A `Predictions`.
    """
    label_parts = {}
    for labels in dataset.map(lambda features, labels: labels):
        for key, value in labels.items():
            label_parts.setdefault(key, []).append(np.asarray(value))
    if not label_parts:
        raise DataError("the split holds no clips to evaluate")
    label_arrays = {k: np.concatenate(v, axis=0) for k, v in label_parts.items()}
    # model.predict handles distribution strategies; the order is the
    # dataset's, so outputs line up with the labels read above.
    outputs = model.predict(dataset.map(lambda features, labels: features), verbose=0)
    wanted = (schema.OUTPUT_PROBABILITIES, schema.OUTPUT_RELEVANCE, schema.OUTPUT_UNIMODAL,
              schema.SCORE_KEY)
    joined = {k: np.asarray(outputs[k]) for k in wanted if k in outputs}
    unimodal_labels = {
        m: label_arrays[schema.unimodal_label_key(m)]
        for m in modalities
        if schema.unimodal_label_key(m) in label_arrays
    }
    return Predictions(
        probabilities=joined[schema.OUTPUT_PROBABILITIES],
        labels=label_arrays[schema.LABEL_KEY].astype(np.int64),
        relevance=joined.get(schema.OUTPUT_RELEVANCE),
        unimodal=joined.get(schema.OUTPUT_UNIMODAL),
        unimodal_labels=unimodal_labels,
        scores=label_arrays.get(schema.SCORE_KEY),
        predicted_scores=joined.get(schema.SCORE_KEY),
    )


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json(path, data):
    """Write `data` as indented JSON atomically (NaN written as null)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(_json_safe(data), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def _train_class_means(data_dir, info, num_classes, batch_size):
    from keras_mre import data as data_lib

    if "train" not in info.splits:
        return None
    labels, scores = [], []
    for _, batch_labels in data_lib.load_dataset(data_dir, "train", batch_size):
        labels.append(np.asarray(batch_labels[schema.LABEL_KEY]))
        scores.append(np.asarray(batch_labels[schema.SCORE_KEY]))
    if not labels:
        return None
    return class_score_means(np.concatenate(labels), np.concatenate(scores), num_classes)


def evaluate_predictions(predictions, class_names, modalities, class_means=None):
    """All metrics and the relevance analysis for a `Predictions`.

    Args:
        predictions: A `Predictions`.
        class_names: List of class names.
        modalities: The model's modality order.
        class_means: Optional `[C]` mean training score per class, used to
            turn probabilities into a predicted score (see the module
            docstring) when the data has scores and the model has no score
            output.

    Returns:
        `(metrics, relevance)`: two JSON-safe dicts.
    """
    metrics = classification_metrics(
        predictions.labels, predictions.predicted_classes, class_names
    )
    if predictions.scores is not None:
        if predictions.predicted_scores is not None:
            predicted = predictions.predicted_scores.reshape(-1)
            source = "model score output"
        elif class_means is not None and np.isfinite(class_means).any():
            predicted = expected_scores(predictions.probabilities, class_means)
            source = "expected class score sum_c p_c * mu_c (mu_c: mean train score of class c)"
        else:
            predicted, source = None, None
        if predicted is not None:
            regression = regression_metrics(predicted, predictions.scores)
            regression["predicted_score"] = source
            if class_means is not None and predictions.predicted_scores is None:
                regression["class_score_means"] = dict(
                    zip(class_names, np.asarray(class_means).tolist())
                )
            metrics["regression"] = regression
    relevance = relevance_analysis(
        predictions.labels,
        class_names,
        modalities,
        relevance=predictions.relevance,
        unimodal_logits=predictions.unimodal,
        unimodal_labels=predictions.unimodal_labels,
    )
    return _json_safe(metrics), _json_safe(relevance)


def check_data_matches_model(info, model_config, data_dir, run_dir):
    """DataError when a data set's dims or classes differ from a run's model."""
    data_dims = {m: int(info.feature_dims[m]) for m in info.modalities}
    model_dims = {m: int(d) for m, d in model_config.feature_dims.items()}
    if data_dims != model_dims:
        raise DataError(
            f"{data_dir}: feature dims {data_dims} do not match the model of run "
            f"{run_dir}, which expects {model_dims}"
        )
    if info.num_classes != model_config.num_classes:
        raise DataError(
            f"{data_dir}: {info.num_classes} classes {info.class_names} but the model of "
            f"run {run_dir} has {model_config.num_classes}"
        )


def evaluate_run(run_dir, data_dir=None, split="test", *, batch_size=None, verbose=True):
    """Evaluate a trained run on one split and write `RUN/eval/<split>/`.

    Args:
        run_dir: A run directory written by `keras_mre.training.train`.
        data_dir: Data set directory; defaults to the one the run was
            trained on (from `RUN/config.json`).
        split: Split to evaluate.
        batch_size: Batch size of inference; defaults to the run's.
        verbose: Print where the results went.

    Returns:
        The metrics dict (also in `metrics.json`), with the relevance
        analysis under `"relevance"`.

    Raises:
        RunError: `run_dir` is not a finished run.
        DataError: the data set or split is missing, or its feature dims or
            classes differ from the run's model.
    """
    from keras_mre import data as data_lib
    from keras_mre import models
    from keras_mre import plots
    from keras_mre import training

    run = training.load_run(run_dir)
    data_dir = data_dir or run.data_dir
    info = data_lib.load_info(data_dir)
    info.check_split(split)
    check_data_matches_model(info, run.model_config, data_dir, run_dir)
    model = run.load_model()
    batch_size = batch_size or run.training.get("batch_size") or 64
    modalities = list(run.model_config.feature_dims)
    dataset = data_lib.load_dataset(
        data_dir, split, batch_size, shuffle=False,
        pool=models.pooled_modalities(run.model_config),
    )
    if info.splits.get(split, 0) == 0:
        raise DataError(f"{data_dir}: split {split!r} holds no clips; nothing to evaluate")
    with data_lib.explain_read_errors(data_dir, [split]):
        predictions = predict_dataset(model, dataset, modalities)
    class_means = None
    if predictions.scores is not None and predictions.predicted_scores is None:
        class_means = _train_class_means(data_dir, info, info.num_classes, batch_size)
    class_names = list(run.model_config.class_names or info.class_names)
    metrics, relevance = evaluate_predictions(predictions, class_names, modalities, class_means)
    metrics["split"] = split
    metrics["data_dir"] = os.path.abspath(data_dir)
    metrics["run_dir"] = os.path.abspath(run_dir)

    out_dir = os.path.join(run_dir, "eval", split)
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "metrics.json"), metrics)
    write_json(os.path.join(out_dir, "relevance.json"), relevance)
    plots.plot_confusion_matrix(
        np.asarray(metrics["confusion_matrix"]),
        class_names,
        title=f"{split}: accuracy {metrics['accuracy']:.3f}, weighted F1 {metrics['f1_weighted']:.3f}",
        path=os.path.join(out_dir, "confusion_matrix.png"),
    )
    plots.plot_relevance(relevance, path=os.path.join(out_dir, "relevance.png"))
    if verbose:
        print(format_metrics(metrics, relevance))
        print(f"Results written to {out_dir}")
    metrics["relevance"] = relevance
    return metrics


def format_metrics(metrics, relevance=None):
    """A short human-readable block of the main metrics."""
    lines = [
        f"{metrics.get('split', 'eval')}: {metrics['num_examples']} clips, "
        f"accuracy {metrics['accuracy']:.4f}, weighted F1 {metrics['f1_weighted']:.4f}, "
        f"macro F1 {metrics['f1_macro']:.4f}"
    ]
    regression = metrics.get("regression")
    if regression and regression.get("num_examples"):
        keys = ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score",
                "Mult_acc_5", "Mult_acc_7", "MAE", "Corr")
        parts = [
            f"{k} {regression[k]:.4f}" if regression.get(k) is not None else f"{k} n/a"
            for k in keys
        ]
        lines.append("MMSA: " + ", ".join(parts))
    if relevance and "mean_relevance_overall" in relevance:
        parts = [f"{m} {v:.3f}" for m, v in relevance["mean_relevance_overall"].items()]
        lines.append("mean relevance H: " + ", ".join(parts))
    if relevance and "agreement" in relevance:
        parts = [f"{m} {v['overall']:.3f}" for m, v in relevance["agreement"].items()]
        lines.append("M2 prediction agrees with multimodal label: " + ", ".join(parts))
    return "\n".join(lines)


def _mean_std(values):
    values = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if values.size == 0:
        return None
    return {"mean": float(values.mean()), "std": float(values.std(ddof=0)), "values": values.tolist()}


def summarize_seeds(per_seed):
    """Mean and (population) standard deviation of each metric over seeds.

    Args:
        per_seed: Dict seed -> metrics dict from `evaluate_run`.

    Returns:
        Dict metric -> {"mean", "std", "values"} for `accuracy`,
        `f1_weighted`, `f1_macro` and each regression metric present.
    """
    summary = {}
    seeds = list(per_seed)
    for key in ("accuracy", "f1_weighted", "f1_macro"):
        summary[key] = _mean_std(per_seed[s].get(key) for s in seeds)
    regression_keys = set()
    for s in seeds:
        regression_keys.update(
            k for k, v in per_seed[s].get("regression", {}).items()
            if isinstance(v, (int, float)) and not k.startswith("num_")
        )
    for key in sorted(regression_keys):
        summary[key] = _mean_std(per_seed[s].get("regression", {}).get(key) for s in seeds)
    return summary


def evaluate_seeds(run_dir, data_dir=None, *, seeds=5, split="test", first_seed=1111, verbose=True):
    """Train and evaluate one run per seed and report mean ± std (Table 3).

    The runs reuse the model config and training arguments of `run_dir`
    with seeds `first_seed, first_seed + 1, ...`; they are written to
    `RUN/seeds/seed_<s>/` (an interrupted seed resumes from its backup) and
    the summary to `RUN/eval/<split>/seeds.json`.

    Returns:
        Dict with `seeds`, `per_seed` metrics and `summary` (mean/std).
    """
    from keras_mre import training

    if not isinstance(seeds, int) or seeds < 1:
        raise RunError(f"--seeds must be a positive integer, got {seeds!r}")
    run = training.load_run(run_dir)
    data_dir = data_dir or run.data_dir
    args = dict(run.training)
    per_seed = {}
    for seed in range(first_seed, first_seed + seeds):
        seed_dir = os.path.join(run_dir, "seeds", f"seed_{seed}")
        if not training.is_finished_run(seed_dir):
            training.train(
                data_dir,
                seed_dir,
                config=run.model_config.to_dict(),
                epochs=args.get("epochs"),
                batch_size=args.get("batch_size"),
                seed=seed,
                strategy=args.get("strategy", "auto"),
                deterministic=args.get("deterministic", False),
                patience=args.get("patience"),
                verbose=verbose,
            )
        metrics = evaluate_run(seed_dir, data_dir, split, verbose=False)
        per_seed[str(seed)] = {k: v for k, v in metrics.items() if k != "relevance"}
        if verbose:
            print(f"seed {seed}: accuracy {metrics['accuracy']:.4f}, "
                  f"weighted F1 {metrics['f1_weighted']:.4f}")
    summary = summarize_seeds(per_seed)
    result = {"split": split, "seeds": [int(s) for s in per_seed], "per_seed": per_seed,
              "summary": summary}
    out_dir = os.path.join(run_dir, "eval", split)
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "seeds.json"), result)
    if verbose:
        print(f"{len(per_seed)} seeds on {split} (mean ± std):")
        for key, value in summary.items():
            if value is not None:
                print(f"  {key:<16} {100 * value['mean']:.2f} ± {100 * value['std']:.2f}"
                      if key in ("accuracy", "f1_weighted", "f1_macro")
                      else f"  {key:<16} {value['mean']:.4f} ± {value['std']:.4f}")
        print(f"Written to {os.path.join(out_dir, 'seeds.json')}")
    return result
