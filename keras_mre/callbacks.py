"""Keras callbacks of the training workflow.

- `RunState`: keeps the per-epoch history, the best checkpoint (by a
  monitored metric) and the early-stopping counters in a state file next
  to `keras.callbacks.BackupAndRestore`'s backup, so that a run killed at any
  point continues with the right history, best score and patience.
- `ValidationAnalysis`: after each epoch, writes to TensorBoard a
  confusion-matrix image of the validation split and the mean relevance
  weight of each modality.
"""

import json
import os

import keras
import numpy as np


def _atomic_write_json(path, data):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _to_float(value):
    return float(np.asarray(value))


class RunState(keras.callbacks.Callback):
    """History, best checkpoint and early-stopping state that survive restarts.

    Place it after `keras.callbacks.EarlyStopping` and before
    `keras.callbacks.BackupAndRestore` in the callback list: at the start of
    training it restores the early-stopping counters after EarlyStopping has
    reset them, and at the end of each epoch it writes its state before the
    backup is written (a crash between the two replays one epoch and the
    state is cut back to the backup's epoch).

    Args:
        state_path: JSON file of the state (in the backup directory).
        best_weights_path: `.weights.h5` file of the best weights so far,
            replaced atomically when the monitored metric improves.
        monitor: Metric name to maximise or minimise, e.g. `"val_f1_weighted"`.
        mode: `"max"` or `"min"`.
        backup_metadata_path: `training_metadata.json` of BackupAndRestore;
            its epoch is the epoch training resumes from.
        early_stopping: Optional `keras.callbacks.EarlyStopping` whose
            `wait` / `best` / `best_epoch` counters are restored.
        write_files: False on non-chief workers of a multi-worker run: keep
            the state in memory only.

    Attributes:
        non_finite: `(epoch, batch, loss)` when a training loss was NaN or
            infinite (training is then stopped and that epoch not recorded).
    """

    def __init__(
        self,
        state_path,
        best_weights_path,
        monitor="val_f1_weighted",
        mode="max",
        backup_metadata_path=None,
        early_stopping=None,
        write_files=True,
    ):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.state_path = state_path
        self.best_weights_path = best_weights_path
        self.monitor = monitor
        self.mode = mode
        self.backup_metadata_path = backup_metadata_path
        self.early_stopping = early_stopping
        self.write_files = write_files
        self.history = {}
        self.best = None
        self.best_epoch = None
        self.resumed_from_epoch = 0
        self.non_finite = None
        self._epoch = 0

    def backup_epoch(self):
        """Epoch recorded by BackupAndRestore (0 when there is no backup)."""
        if self.backup_metadata_path and os.path.exists(self.backup_metadata_path):
            with open(self.backup_metadata_path, encoding="utf-8") as f:
                return int(json.load(f).get("epoch", 0))
        return 0

    def on_train_begin(self, logs=None):
        epoch = self.backup_epoch()
        self.resumed_from_epoch = epoch
        if epoch == 0 or not os.path.exists(self.state_path):
            self.history, self.best, self.best_epoch = {}, None, None
            return
        with open(self.state_path, encoding="utf-8") as f:
            state = json.load(f)
        self.history = {k: list(v)[:epoch] for k, v in state["history"].items()}
        self.best = state.get("best")
        self.best_epoch = state.get("best_epoch")
        if self.best_epoch is not None and self.best_epoch >= epoch:
            # The best epoch is replayed; the metric is recomputed then.
            values = self.history.get(self.monitor, [])
            self._recompute_best(values)
        stopping = self.early_stopping
        if stopping is not None and state.get("early_stopping"):
            saved = state["early_stopping"]
            if saved.get("epoch", 0) <= epoch:
                stopping.wait = saved["wait"]
                stopping.best = saved["best"]
                stopping.best_epoch = saved["best_epoch"]

    def _recompute_best(self, values):
        self.best, self.best_epoch = None, None
        for index, value in enumerate(values):
            if self._improves(value):
                self.best, self.best_epoch = value, index

    def _improves(self, value):
        if value is None or not np.isfinite(value):
            return False
        if self.best is None:
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(_to_float(loss)):
            # Stop before a NaN or infinite loss reaches the weights on disk.
            self.non_finite = (self._epoch, batch, _to_float(loss))
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if self.non_finite is not None:
            return
        logs = logs or {}
        for key, value in logs.items():
            self.history.setdefault(key, []).append(_to_float(value))
        value = logs.get(self.monitor)
        value = None if value is None else _to_float(value)
        if self._improves(value):
            self.best, self.best_epoch = value, epoch
            if self.write_files:
                tmp = self.best_weights_path.replace(".weights.h5", ".tmp.weights.h5")
                self.model.save_weights(tmp, overwrite=True)
                os.replace(tmp, self.best_weights_path)
        if self.write_files:
            state = {
                "epochs_done": epoch + 1,
                "history": self.history,
                "monitor": self.monitor,
                "best": self.best,
                "best_epoch": self.best_epoch,
            }
            stopping = self.early_stopping
            if stopping is not None:
                best = stopping.best
                state["early_stopping"] = {
                    "epoch": epoch + 1,
                    "wait": int(stopping.wait),
                    "best": None if best is None else float(best),
                    "best_epoch": int(stopping.best_epoch),
                }
            os.makedirs(os.path.dirname(self.state_path), exist_ok=True)
            _atomic_write_json(self.state_path, state)


class ValidationAnalysis(keras.callbacks.Callback):
    """Confusion-matrix image and mean relevance per modality in TensorBoard.

    After each epoch the model predicts `dataset` once; the row-normalised
    confusion matrix is logged as the image `confusion_matrix`, and the mean
    of each modality's relevance weight H (output `"relevance"`, when the
    model has it) as the scalar `relevance/<modality>`.

    Args:
        dataset: `tf.data.Dataset` of `(features, labels)` batches.
        log_dir: TensorBoard directory to write to (e.g. `RUN/logs/validation`).
        class_names: List of class names.
        modalities: The model's modality order.
    """

    def __init__(self, dataset, log_dir, class_names, modalities):
        super().__init__()
        self.dataset = dataset
        self.log_dir = log_dir
        self.class_names = list(class_names)
        self.modalities = list(modalities)
        self._writer = None

    def _get_writer(self):
        import tensorflow as tf

        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        return self._writer

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        from keras_mre import evaluation
        from keras_mre import plots

        predictions = evaluation.predict_dataset(self.model, self.dataset, self.modalities)
        matrix = evaluation.confusion_matrix(
            predictions.labels, predictions.predicted_classes, len(self.class_names)
        )
        figure = plots.plot_confusion_matrix(
            matrix, self.class_names, title=f"validation, epoch {epoch + 1}"
        )
        png = plots.figure_to_png(figure)
        image = tf.image.decode_png(png, channels=4)[tf.newaxis]
        with self._get_writer().as_default(step=epoch):
            tf.summary.image("confusion_matrix", image)
            if predictions.relevance is not None:
                means = predictions.relevance.mean(axis=0)
                for modality, value in zip(self.modalities, means):
                    tf.summary.scalar(f"relevance/{modality}", float(value))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

