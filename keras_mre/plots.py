"""PNG plots of training and evaluation results (matplotlib, Agg canvas).

Every function builds a `matplotlib.figure.Figure` on an Agg canvas (no
pyplot state, so it works in scripts, servers and notebooks alike), writes it
to `path` as PNG when a path is given, and returns the figure.
"""

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _new_figure(width, height):
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _finish(figure, path):
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, format="png")
    return figure


def figure_to_png(figure):
    """PNG bytes of a figure."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _matrix_panel(axes, matrix, row_labels, col_labels, title, *, normalize, xlabel, ylabel):
    matrix = np.asarray(matrix, dtype=np.float64)
    shown = matrix
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        shown = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    image = axes.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    axes.set_xticks(range(len(col_labels)))
    axes.set_xticklabels(col_labels, rotation=45, ha="right")
    axes.set_yticks(range(len(row_labels)))
    axes.set_yticklabels(row_labels)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=10)
    for i in range(shown.shape[0]):
        for j in range(shown.shape[1]):
            text = f"{shown[i, j]:.2f}" if normalize else f"{shown[i, j]:.3g}"
            if normalize and matrix.dtype.kind in "fi" and float(matrix[i, j]).is_integer():
                text += f"\n({int(matrix[i, j])})"
            axes.text(
                j, i, text, ha="center", va="center", fontsize=7,
                color="white" if shown[i, j] > 0.5 * (np.nanmax(shown) or 1) else "black",
            )
    return image


def plot_confusion_matrix(matrix, class_names, *, title=None, normalize=True, path=None):
    """Confusion matrix heat map; rows are true classes.

    Args:
        matrix: Int array `[C, C]` of counts.
        class_names: List of `C` class names.
        title: Optional title.
        normalize: Show row fractions (counts in parentheses).
        path: Optional PNG file to write.
    """
    size = 2.0 + 0.7 * len(class_names)
    figure = _new_figure(size + 1.0, size)
    axes = figure.add_subplot(1, 1, 1)
    image = _matrix_panel(
        axes, matrix, class_names, class_names, title or "Confusion matrix",
        normalize=normalize, xlabel="predicted", ylabel="true",
    )
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    return _finish(figure, path)


def plot_history(history, *, metrics=("loss", "accuracy", "f1_weighted"), path=None):
    """Training curves: one panel per metric, train and validation.

    Args:
        history: Dict metric name -> list of per-epoch values (Keras'
            `History.history`, or `RUN/history.json`'s `"history"`).
        metrics: Metric names to draw (missing ones are skipped).
        path: Optional PNG file to write.
    """
    shown = [m for m in metrics if m in history or f"val_{m}" in history]
    figure = _new_figure(4.0 * max(len(shown), 1), 3.2)
    for index, name in enumerate(shown, start=1):
        axes = figure.add_subplot(1, len(shown), index)
        for key, label in ((name, "train"), (f"val_{name}", "validation")):
            if key in history:
                values = history[key]
                axes.plot(range(1, len(values) + 1), values, marker="o", label=label)
        axes.set_xlabel("epoch")
        axes.set_title(name)
        axes.grid(alpha=0.3)
        axes.legend()
    return _finish(figure, path)


def plot_relevance(analysis, *, path=None):
    """The relevance analysis of `keras_mre.evaluation.relevance_analysis`.

    First panel: mean relevance weight H per true class and modality. Then,
    per modality, the confusion matrix of the multimodal label (rows)
    against that modality's own M2 prediction (columns), titled with the
    agreement rate: the paper's Figure 4(c)(d) built from predictions.
    """
    class_names = analysis["class_names"]
    modalities = analysis["modalities"]
    agreement = analysis.get("agreement", {})
    panels = (1 if "mean_relevance" in analysis else 0) + len(agreement)
    side = 2.2 + 0.55 * len(class_names)
    figure = _new_figure(max(panels, 1) * (side + 0.8), side)
    index = 1
    if "mean_relevance" in analysis:
        axes = figure.add_subplot(1, max(panels, 1), index)
        index += 1
        matrix = np.array(
            [
                [np.nan if analysis["mean_relevance"][c][m] is None
                 else analysis["mean_relevance"][c][m] for m in modalities]
                for c in class_names
            ]
        )
        image = axes.imshow(matrix, cmap="viridis", aspect="auto")
        axes.set_xticks(range(len(modalities)))
        axes.set_xticklabels(modalities)
        axes.set_yticks(range(len(class_names)))
        axes.set_yticklabels(class_names)
        axes.set_xlabel("modality")
        axes.set_ylabel("true class")
        axes.set_title("mean relevance H", fontsize=10)
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                if np.isfinite(matrix[i, j]):
                    axes.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center",
                              fontsize=8, color="white")
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    for modality, entry in agreement.items():
        axes = figure.add_subplot(1, max(panels, 1), index)
        index += 1
        _matrix_panel(
            axes, np.asarray(entry["confusion_matrix"]), class_names, class_names,
            f"{modality} M2 vs multimodal label\nagreement {entry['overall']:.1%}",
            normalize=True, xlabel=f"{modality} prediction", ylabel="multimodal label",
        )
    return _finish(figure, path)
