"""Training runs: `train()` behind `keras-mre train`, and reading runs back.

A run directory holds everything needed to rebuild, judge and serve a model:

```
RUN/config.json        model config + data path + training arguments
RUN/history.json       per-epoch metrics, best epoch, resume point, timings
RUN/model.keras        the model with the best validation weighted F1
RUN/checkpoints/       best.weights.h5 (replaced whenever validation improves)
RUN/logs/              TensorBoard: train/ and validation/ scalars, histograms,
                       confusion-matrix image, mean relevance per modality
RUN/backup/            BackupAndRestore state while a run is unfinished
```

Rerunning the same `train` call on an unfinished run resumes from
`RUN/backup` at the last finished epoch (also after `kill -9`); a finished
run is refused unless `overwrite=True`.

```python
from keras_mre import training
result = training.train("data/sdme", "runs/mre", epochs=20, seed=1111)
print(result.summary())
```
"""

import dataclasses
import datetime
import json
import numbers
import os
import shutil
import subprocess
import sys
import time

from keras_mre.errors import ConfigError
from keras_mre.errors import DataError
from keras_mre.errors import RunError

RUN_FORMAT = "keras-mre-run"
RUN_FORMAT_VERSION = 1
STRATEGIES = ("auto", "mirrored", "multiworker", "none")
DEFAULT_EPOCHS = 30
DEFAULT_PATIENCE = 5
DEFAULT_SEED = 1111
DEFAULT_CLUSTER_TIMEOUT = 120
VALIDATION_SPLITS = ("valid", "validation", "val", "dev")
# Paths inside a run directory.
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
MODEL_FILE = "model.keras"
BEST_WEIGHTS = os.path.join("checkpoints", "best.weights.h5")
BACKUP_DIR = "backup"
LOG_DIR = "logs"
WORKERS_DIR = ".workers"


class ClusterTimeoutError(RunError):
    """A multi-worker cluster did not come up, or a worker stopped answering."""


# --------------------------------------------------------------------------
# Distribution strategies
# --------------------------------------------------------------------------


def parse_tf_config(value=None):
    """Validate the `TF_CONFIG` environment variable of a multi-worker job.

    Args:
        value: The JSON text; defaults to `os.environ["TF_CONFIG"]`.

    Returns:
        The parsed dict: `{"cluster": {job: ["host:port", ...]},
        "task": {"type": job, "index": i}}`.

    Raises:
        ConfigError: unset, not JSON, or a field missing or inconsistent,
            naming the field.
    """
    if value is None:
        value = os.environ.get("TF_CONFIG")
    if not value:
        raise ConfigError(
            "TF_CONFIG is not set; --strategy multiworker needs TF_CONFIG with "
            "'cluster' and 'task' on every worker"
        )
    try:
        config = json.loads(value)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"TF_CONFIG is not valid JSON (line {error.lineno} column {error.colno}: {error.msg})"
        ) from None
    if not isinstance(config, dict):
        raise ConfigError(f"TF_CONFIG must be a JSON object, got {type(config).__name__}")
    cluster = config.get("cluster")
    if not isinstance(cluster, dict) or not cluster:
        raise ConfigError("TF_CONFIG: 'cluster' must be a non-empty object job -> list of host:port")
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not addresses:
            raise ConfigError(f"TF_CONFIG: cluster.{job} must be a non-empty list of host:port")
        for address in addresses:
            host, sep, port = str(address).rpartition(":")
            if not isinstance(address, str) or not sep or not host or not port.isdigit():
                raise ConfigError(
                    f"TF_CONFIG: cluster.{job} entry {address!r} is not host:port"
                )
    task = config.get("task")
    if not isinstance(task, dict):
        raise ConfigError("TF_CONFIG: 'task' must be an object {'type': job, 'index': i}")
    job = task.get("type")
    if job not in cluster:
        raise ConfigError(
            f"TF_CONFIG: task.type {job!r} is not a job of the cluster {sorted(cluster)}"
        )
    index = task.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(cluster[job]):
        raise ConfigError(
            f"TF_CONFIG: task.index {index!r} is out of range for job {job!r} "
            f"with {len(cluster[job])} tasks"
        )
    return config


def _cluster_size(config):
    return sum(len(v) for job, v in config["cluster"].items() if job in ("chief", "worker"))


def is_chief(tf_config):
    """Whether this task writes the run files: the chief, else worker 0."""
    if tf_config is None:
        return True
    task = tf_config["task"]
    if "chief" in tf_config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def make_strategy(name="auto", *, cluster_timeout=DEFAULT_CLUSTER_TIMEOUT):
    """Create the distribution strategy named by `--strategy`.

    - `"auto"`: MultiWorkerMirroredStrategy when `TF_CONFIG` names more than
      one worker; MirroredStrategy over all GPUs when there are several;
      otherwise the default (single-device) strategy.
    - `"mirrored"`: MirroredStrategy over all local GPUs (or the CPU).
    - `"multiworker"`: MultiWorkerMirroredStrategy from `TF_CONFIG`.
    - `"none"`: the default strategy.

    Args:
        name: One of `STRATEGIES`.
        cluster_timeout: Seconds a multi-worker task waits for the others
            to join, and the timeout of each collective operation, so that a
            dead worker ends in `ClusterTimeoutError` instead of a hang.

    Returns:
        `(strategy, tf_config)`; `tf_config` is None unless multi-worker.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ConfigError(f"strategy={name!r}: expected one of {', '.join(STRATEGIES)}")
    if name == "auto":
        if os.environ.get("TF_CONFIG"):
            tf_config = parse_tf_config()
            if _cluster_size(tf_config) > 1:
                name = "multiworker"
        if name == "auto":
            gpus = tf.config.list_logical_devices("GPU")
            name = "mirrored" if len(gpus) > 1 else "none"
    if name == "none":
        return tf.distribute.get_strategy(), None
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(), None
    tf_config = parse_tf_config()
    return _multi_worker_strategy(tf_config, cluster_timeout), tf_config


def _patch_keras_multi_worker_reduce():
    """Let Keras' fit() reduce scalar logs under MultiWorkerMirroredStrategy.

    Keras 3.15 reduces every per-step log value across workers with
    `strategy.reduce("MEAN", v, axis=0)`, which fails for the scalar loss
    and metric values ("Invalid reduction dimension 0 for input with 0
    dimensions"). Scalars are reduced with `axis=None` instead; everything
    else goes through Keras unchanged.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_keras_mre_scalar_fix", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            import keras

            def reduce(value):
                if getattr(value, "shape", None) is not None and value.shape.rank == 0:
                    return strategy.reduce("MEAN", value, axis=None)
                return original(value, strategy, reduction)

            return keras.tree.map_structure(reduce, values)
        return original(values, strategy, reduction)

    reduce_per_replica._keras_mre_scalar_fix = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def _multi_worker_strategy(tf_config, timeout):
    import tensorflow as tf

    _patch_keras_multi_worker_reduce()
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=float(timeout))
    workers = ", ".join(
        f"{job}:{i} {address}"
        for job, addresses in tf_config["cluster"].items()
        for i, address in enumerate(addresses)
    )
    message = (
        f"multi-worker cluster not complete after {timeout} s: not every task of TF_CONFIG "
        f"({workers}) joined; start all workers with the same cluster, or raise --cluster-timeout"
    )
    # TensorFlow waits inside C++ (holding the GIL) for every task to
    # register, so no Python thread or signal handler can end the wait. A
    # small watchdog process prints the error and kills this process when
    # the strategy is not up in time.
    watchdog = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(timeout), message],
        stdin=subprocess.PIPE,
    )
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError) as error:
        detail = " ".join(str(error.message).split())[:200]
        raise ClusterTimeoutError(f"{message} ({detail})") from None
    finally:
        watchdog.stdin.close()
        watchdog.wait()


_WATCHDOG = """
import os, select, signal, sys
pid, timeout, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ready, _, _ = select.select([sys.stdin], [], [], timeout)
if not ready:
    sys.stderr.write("keras-mre: error: " + message + " (process killed)\\n")
    sys.stderr.flush()
    os.kill(pid, signal.SIGKILL)
"""


# --------------------------------------------------------------------------
# Config resolution and run files
# --------------------------------------------------------------------------


def read_config_file(path):
    """Read a model config JSON file into a dict; ConfigError names the file."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read config file: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"{path}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a JSON object, got {type(data).__name__}")
    if data.get("format") == RUN_FORMAT:
        # A run's config.json: reuse its model config.
        data = data.get("model_config")
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: run config has no 'model_config' object")
    return data


def resolve_config(info, *, model=None, config=None, batch_size=None, seed=None,
                   learning_rate=None, source="config"):
    """The model config of a training run on the data set `info`.

    The data set decides `feature_dims`, `num_classes` and `class_names`; a
    config that states other values is refused. `batch_size`, `seed` and
    `learning_rate`, when given, override the config.

    Args:
        info: `DatasetInfo` of the training data.
        model: Model name; None means the config's `"model"` or `"mre"`.
        config: None, a path to a JSON config file, a dict or a ModelConfig.
        source: Name used for the config in error messages.

    Raises:
        ConfigError: unknown model, unknown key, wrong type, or a value that
            contradicts the data set.
    """
    from keras_mre.config import ModelConfig
    from keras_mre.config import config_from_dict

    if config is None:
        data = {}
    elif isinstance(config, ModelConfig):
        data = config.to_dict()
    elif isinstance(config, dict):
        data = dict(config)
    elif isinstance(config, (str, os.PathLike)):
        source = os.fspath(config)
        data = read_config_file(config)
    else:
        raise ConfigError(
            f"config: expected None, a file path, a dict or a ModelConfig, got {type(config).__name__}"
        )
    if model is not None:
        if "model" in data and data["model"] != model:
            raise ConfigError(
                f"{source}: names model {data['model']!r} but the model {model!r} was requested"
            )
        data["model"] = model
    data.setdefault("model", "mre")
    wanted = {
        "feature_dims": {m: int(info.feature_dims[m]) for m in info.modalities},
        "num_classes": info.num_classes,
        "class_names": list(info.class_names),
    }
    for key, value in wanted.items():
        given = data.get(key)
        if given is not None and given != value:
            raise ConfigError(
                f"{source}: {key}={given!r} contradicts the data set {info.path}, which has {value!r}"
            )
        data[key] = value
    for key, value in (("batch_size", batch_size), ("seed", seed), ("learning_rate", learning_rate)):
        if value is not None:
            data[key] = value
    try:
        return config_from_dict(data)
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


@dataclasses.dataclass
class Run:
    """A run directory read back by `load_run`.

    Attributes:
        run_dir: The directory.
        model_config: Its `ModelConfig`.
        data_dir: Absolute path of the data set it was trained on.
        training: Dict of the training arguments (epochs, batch_size, ...).
        record: The whole parsed `config.json`.
    """

    run_dir: str
    model_config: object
    data_dir: str
    training: dict
    record: dict

    @property
    def model_path(self):
        """Path of `RUN/model.keras`."""
        return os.path.join(self.run_dir, MODEL_FILE)

    def load_model(self, compile=True):
        """Load `RUN/model.keras`; RunError when it is missing or unreadable."""
        import keras

        from keras_mre import models

        models.available_models()  # imports every model module: registers the classes

        if not os.path.isfile(self.model_path):
            raise RunError(
                f"{self.run_dir}: no {MODEL_FILE}; the run has not finished "
                "(rerun `keras-mre train` with the same --out to resume it)"
            )
        try:
            model = keras.saving.load_model(self.model_path, compile=compile)
        except (OSError, ValueError, TypeError) as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise RunError(f"{self.model_path}: cannot load the model: {message}") from None
        config = getattr(model, "config", None)
        if not isinstance(model, models.EmotionModel) or config is None:
            raise RunError(
                f"{self.model_path}: holds a {type(model).__name__}, not a keras-mre model"
            )
        if config.to_dict() != self.model_config.to_dict():
            raise RunError(
                f"{self.model_path}: the model's config differs from {CONFIG_FILE} of the run"
            )
        return model


def load_run(run_dir):
    """Read `RUN/config.json` of a run directory.

    Raises:
        RunError: the directory is missing or is not a keras-mre run (no or
            invalid `config.json`), naming the path.
    """
    from keras_mre.config import config_from_dict

    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir):
        raise RunError(f"{run_dir}: run directory not found")
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise RunError(f"{run_dir}: not a keras-mre run (no {CONFIG_FILE}; train one with `keras-mre train`)")
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunError(f"{path}: unreadable run config: {error}") from None
    if not isinstance(record, dict) or record.get("format") != RUN_FORMAT:
        raise RunError(f"{path}: not a keras-mre run config (missing \"format\": \"{RUN_FORMAT}\")")
    if record.get("format_version", 0) > RUN_FORMAT_VERSION:
        raise RunError(
            f"{path}: run format version {record.get('format_version')} is newer than this "
            f"keras-mre reads ({RUN_FORMAT_VERSION})"
        )
    try:
        model_config = config_from_dict(record["model_config"])
    except (KeyError, ConfigError) as error:
        raise RunError(f"{path}: invalid model_config: {error}") from None
    return Run(
        run_dir=run_dir,
        model_config=model_config,
        data_dir=record.get("data", {}).get("path"),
        training=dict(record.get("training", {})),
        record=record,
    )


def is_finished_run(run_dir):
    """Whether `run_dir` holds a finished run (config, history and model)."""
    return all(
        os.path.isfile(os.path.join(run_dir, name))
        for name in (CONFIG_FILE, HISTORY_FILE, MODEL_FILE)
    )


def _write_json_atomic(path, data):
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _comparable(record):
    return {k: record[k] for k in ("model_config", "data", "training")}


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


@dataclasses.dataclass
class TrainResult:
    """What `train` returns.

    Attributes:
        run_dir: The run directory.
        model: The trained Keras model (best weights loaded).
        history: Dict metric -> per-epoch values over the whole run.
        best_epoch: 1-based epoch of the best monitored value (None if none).
        best: Dict of all metrics at the best epoch.
        monitor: Name of the monitored metric.
        resumed_from_epoch: Epochs already done when this call started (0 =
            fresh start).
        epochs_run: Epochs run by this call.
        wall_time_s: Seconds this call took.
        notes: Lines about clips dropped, fallbacks taken, etc.
    """

    run_dir: str
    model: object
    history: dict
    best_epoch: int | None
    best: dict
    monitor: str
    resumed_from_epoch: int
    epochs_run: int
    wall_time_s: float
    notes: list = dataclasses.field(default_factory=list)
    parameters: int = 0
    config: object = None

    def summary(self):
        """A one-screen text summary of the run."""
        line = "-" * 64
        cfg = self.config
        lines = [
            line,
            f"run          {self.run_dir}",
            f"model        {cfg.MODEL_NAME if cfg else '?'} "
            f"({self.parameters:,} parameters), modalities {', '.join(cfg.modalities) if cfg else '?'}",
            f"epochs       {len(next(iter(self.history.values()), []))} in total, "
            f"{self.epochs_run} in this call"
            + (f" (resumed after epoch {self.resumed_from_epoch})" if self.resumed_from_epoch else ""),
            f"time         {self.wall_time_s:.1f} s",
        ]
        if self.best_epoch is not None:
            lines.append(f"best epoch   {self.best_epoch} by {self.monitor}")
            for key in ("loss", "accuracy", "f1_weighted"):
                parts = []
                for prefix, label in (("", "train"), ("val_", "validation")):
                    if prefix + key in self.best:
                        parts.append(f"{label} {self.best[prefix + key]:.4f}")
                if parts:
                    lines.append(f"  {key:<13}{', '.join(parts)}")
        for note in self.notes:
            lines.append(f"note         {note}")
        lines += [
            f"files        {MODEL_FILE}, {CONFIG_FILE}, {HISTORY_FILE}, {LOG_DIR}/ "
            f"(tensorboard --logdir {os.path.join(self.run_dir, LOG_DIR)})",
            line,
        ]
        return "\n".join(lines)


def _check_positive_int(name, value):
    if value is None:
        return
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _validation_split(info, requested):
    if requested is not None:
        if requested is False:
            return None
        info.check_split(requested)
        return requested
    for name in VALIDATION_SPLITS:
        if info.splits.get(name):
            return name
    return None


def train(
    data_dir,
    run_dir,
    *,
    model=None,
    config=None,
    epochs=None,
    batch_size=None,
    seed=None,
    strategy="auto",
    deterministic=False,
    patience=None,
    learning_rate=None,
    validation_split=None,
    overwrite=False,
    histogram_freq=1,
    steps_per_epoch=None,
    cluster_timeout=DEFAULT_CLUSTER_TIMEOUT,
    callbacks=None,
    verbose="auto",
    bucket_by=None,
):
    """Train a model on a keras-mre data set and write a run directory.

    Args:
        data_dir: Data set directory (with `dataset.json`).
        run_dir: Run directory to write (or resume).
        model: Model name (`keras_mre.available_models()`); default: the
            config's, else `"mre"`.
        config: None, a JSON config file path, a dict or a ModelConfig.
            Data-dependent fields come from the data set.
        epochs: Maximum epochs (default 30).
        batch_size: Global batch size (default: the config's, 64).
        seed: Seed of weights, dropout and shuffling (default: the config's,
            else 1111).
        strategy: `"auto"`, `"mirrored"`, `"multiworker"` or `"none"` (see
            `make_strategy`).
        deterministic: Also enable TensorFlow op determinism, so that two
            runs with the same seed give identical metrics on CPU.
        patience: Early-stopping patience in epochs (default 5).
        learning_rate: Overrides the config's learning rate.
        validation_split: Split to validate on; default the first of
            "valid", "validation", "val", "dev" present; False for none.
        overwrite: Replace a finished run in `run_dir`.
        histogram_freq: Epochs between TensorBoard weight histograms (0 = off).
        steps_per_epoch: Limit the training steps per epoch.
        cluster_timeout: Seconds to wait for multi-worker peers.
        callbacks: Extra Keras callbacks.
        verbose: Keras' fit verbosity ("auto", 0, 1, 2); 0 also hides the
            summary.
        bucket_by: Modality name or list of them: batch training clips of
            similar length together (`keras_mre.data.load_dataset`'s
            `bucket_by`). Speeds up models that cut each batch to its
            longest clip (MulT; the text LSTM of every model) at the cost
            of less random batches. Default None: plain shuffled batches.

    Returns:
        A `TrainResult`.

    Raises:
        DataError: missing or invalid data set.
        ConfigError: invalid config, argument or TF_CONFIG.
        RunError: `run_dir` holds a finished run (without `overwrite`), or
            an unfinished run of a different configuration.
        ClusterTimeoutError: multi-worker peers did not join in time.
    """
    import keras
    import tensorflow as tf

    from keras_mre import callbacks as run_callbacks
    from keras_mre import data as data_lib
    from keras_mre import models

    start = time.time()
    data_dir = os.fspath(data_dir)
    run_dir = os.fspath(run_dir)
    _check_positive_int("epochs", epochs)
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("patience", patience)
    _check_positive_int("steps_per_epoch", steps_per_epoch)
    if seed is not None and (not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0):
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy={strategy!r}: expected one of {', '.join(STRATEGIES)}")
    epochs = epochs or DEFAULT_EPOCHS
    patience = patience or DEFAULT_PATIENCE

    info = data_lib.load_info(data_dir)
    bucket_by = data_lib.check_bucket_by(info, bucket_by, caller="train")
    model_config = resolve_config(
        info, model=model, config=config, batch_size=batch_size, seed=seed,
        learning_rate=learning_rate,
    )
    if model_config.seed is None:
        model_config = model_config.replace(seed=DEFAULT_SEED)
    seed = model_config.seed
    batch_size = model_config.batch_size
    val_split = _validation_split(info, validation_split)
    if "train" not in info.splits:
        raise DataError(f"{data_dir}: no 'train' split (splits: {sorted(info.splits)})")
    if info.splits["train"] == 0:
        raise DataError(f"{data_dir}: split 'train' holds no clips; nothing to train on")

    # The strategy first: multi-worker setup must precede every TF op.
    dist, tf_config = make_strategy(strategy, cluster_timeout=cluster_timeout)
    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    chief = is_chief(tf_config)
    distributed = dist.num_replicas_in_sync > 1 or tf_config is not None

    record = {
        "format": RUN_FORMAT,
        "format_version": RUN_FORMAT_VERSION,
        "model_config": model_config.to_dict(),
        "data": {
            "path": os.path.abspath(data_dir),
            "name": info.name,
            "modalities": list(info.modalities),
            "feature_dims": dict(info.feature_dims),
            "max_lengths": dict(info.max_lengths),
            "class_names": list(info.class_names),
            "splits": dict(info.splits),
            "validation_split": val_split,
        },
        "training": {
            "epochs": epochs,
            "batch_size": batch_size,
            "seed": seed,
            "strategy": strategy,
            "deterministic": bool(deterministic),
            "patience": patience,
            "steps_per_epoch": steps_per_epoch,
            "bucket_by": list(bucket_by) or None,
            "monitor": None,
        },
    }
    monitor = "val_f1_weighted" if val_split else "f1_weighted"
    record["training"]["monitor"] = monitor

    # Files: the chief writes the run; other workers keep their state apart.
    if chief:
        work_dir = run_dir
    else:
        task = tf_config["task"]
        work_dir = os.path.join(run_dir, WORKERS_DIR, f"{task['type']}-{task['index']}")
    backup_dir = os.path.join(work_dir, BACKUP_DIR)
    state_path = os.path.join(work_dir, "run_state.json")
    if chief:
        _prepare_run_dir(run_dir, record, backup_dir, overwrite)
    os.makedirs(os.path.join(work_dir, "checkpoints"), exist_ok=True)

    notes = []
    # Frame means the model would take every step are taken once per clip.
    pool = models.pooled_modalities(model_config)
    train_ds = _known_length(
        data_lib.load_dataset(
            data_dir, "train", batch_size, shuffle=True, seed=seed,
            drop_remainder=distributed, pool=pool, bucket_by=bucket_by or None,
        ),
        info.splits["train"], batch_size, distributed,
    )
    if distributed:
        dropped = info.splits["train"] % batch_size
        if dropped:
            notes.append(f"{dropped} training clips per epoch left out (partial last batch under distribution)")
    if info.splits["train"] < batch_size and distributed:
        raise DataError(
            f"{data_dir}: split 'train' has {info.splits['train']} clips, fewer than one global "
            f"batch of {batch_size}"
        )
    val_ds = None
    if val_split:
        val_ds = _known_length(
            data_lib.load_dataset(
                data_dir, val_split, batch_size, shuffle=False,
                drop_remainder=distributed, pool=pool,
            ),
            info.splits[val_split], batch_size, distributed,
        )
        if distributed and info.splits[val_split] % batch_size:
            notes.append(
                f"{info.splits[val_split] % batch_size} {val_split} clips left out of the per-epoch "
                "validation (partial batch); `keras-mre evaluate` uses all"
            )
        if distributed and info.splits[val_split] < batch_size:
            val_ds = None
            monitor = "f1_weighted"
            record["training"]["monitor"] = monitor
            notes.append(f"split {val_split!r} is smaller than one global batch: no validation")
    else:
        notes.append("no validation split: the best epoch is chosen by training f1_weighted")

    with dist.scope():
        net = models.build_model(model_config, compile=True)
        with data_lib.explain_read_errors(data_dir, ["train"]):
            sample = next(iter(train_ds))
        net(sample[0], training=False)
    if tf_config is not None:
        _build_before_multi_worker_fit(net, sample, dist)
    parameters = int(sum(int(tf.size(w)) for w in net.weights))

    early_stopping = keras.callbacks.EarlyStopping(
        monitor=monitor, mode="max", patience=patience, verbose=1 if verbose else 0
    )
    state = run_callbacks.RunState(
        state_path,
        os.path.join(work_dir, BEST_WEIGHTS),
        monitor=monitor,
        mode="max",
        backup_metadata_path=os.path.join(backup_dir, "training_metadata.json"),
        early_stopping=early_stopping,
        write_files=True,
    )
    backup = keras.callbacks.BackupAndRestore(
        backup_dir, save_freq="epoch", double_checkpoint=True, delete_checkpoint=False
    )
    fit_callbacks = [early_stopping, state, backup]
    if chief:
        fit_callbacks.append(
            keras.callbacks.TensorBoard(
                os.path.join(run_dir, LOG_DIR), histogram_freq=histogram_freq,
                write_graph=False, update_freq="epoch",
            )
        )
        if val_ds is not None and tf_config is None:
            fit_callbacks.append(
                run_callbacks.ValidationAnalysis(
                    val_ds, os.path.join(run_dir, LOG_DIR, "validation"),
                    model_config.class_names or info.class_names, model_config.modalities,
                )
            )
    fit_callbacks.extend(callbacks or [])

    resumed = state.backup_epoch()
    if resumed and verbose:
        print(f"Resuming {run_dir} from its backup after epoch {resumed} of {epochs}.")
    fit_verbose = verbose if chief else 0
    try:
        with data_lib.explain_read_errors(data_dir, ["train", val_split]):
            net.fit(
                train_ds,
                validation_data=val_ds,
                epochs=epochs,
                steps_per_epoch=steps_per_epoch,
                callbacks=fit_callbacks,
                verbose=fit_verbose,
                shuffle=False,
            )
    except tf.errors.UnavailableError as error:
        raise ClusterTimeoutError(
            f"a worker of the multi-worker cluster stopped answering: {error.message.splitlines()[0]}; "
            f"rerun every worker with the same command to resume from {BACKUP_DIR}/"
        ) from None
    except tf.errors.DeadlineExceededError as error:
        raise ClusterTimeoutError(
            f"a collective operation timed out after {cluster_timeout} s: "
            f"{error.message.splitlines()[0]}"
        ) from None

    if state.non_finite is not None:
        epoch, batch, value = state.non_finite
        value = "NaN" if value != value else "infinite"
        raise RunError(
            f"{run_dir}: the training loss became {value} at epoch {epoch + 1}, batch {batch + 1}; "
            "training stopped and no model.keras was written (lower the learning rate or "
            "check the data for extreme values)"
        )
    history = state.history
    best_epoch = state.best_epoch
    best_path = os.path.join(work_dir, BEST_WEIGHTS)
    if best_epoch is not None and os.path.isfile(best_path):
        net.load_weights(best_path)
    best = {k: v[best_epoch] for k, v in history.items()} if best_epoch is not None else {}
    epochs_total = len(next(iter(history.values()), []))
    result = TrainResult(
        run_dir=run_dir,
        model=net,
        history=history,
        best_epoch=None if best_epoch is None else best_epoch + 1,
        best=best,
        monitor=monitor,
        resumed_from_epoch=resumed,
        epochs_run=epochs_total - resumed,
        wall_time_s=time.time() - start,
        notes=notes,
        parameters=parameters,
        config=model_config,
    )
    if chief:
        model_path = os.path.join(run_dir, MODEL_FILE)
        tmp = os.path.join(run_dir, f".model.tmp-{os.getpid()}.keras")
        net.save(tmp)
        os.replace(tmp, model_path)
        _write_json_atomic(
            os.path.join(run_dir, HISTORY_FILE),
            {
                "history": history,
                "monitor": monitor,
                "best_epoch": result.best_epoch,
                "best": best,
                "epochs": epochs_total,
                "stopped_early": epochs_total < epochs,
                "resumed_from_epoch": resumed,
                "epochs_run_last_call": result.epochs_run,
                "wall_time_s_last_call": round(result.wall_time_s, 3),
                "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "notes": notes,
            },
        )
        shutil.rmtree(backup_dir, ignore_errors=True)
        if os.path.exists(state_path):
            os.remove(state_path)
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(work_dir))
        except OSError:
            pass  # another worker's directory is still there
    if verbose and chief:
        print(result.summary())
    return result


def _build_before_multi_worker_fit(model, batch, strategy):
    # Keras' fit() and evaluate() first reduce one distributed batch across
    # replicas to build metrics and optimizer symbolically; the collective
    # reduce of MultiWorkerMirroredStrategy cannot take a nested (dict)
    # batch. Build from a local batch here and skip that step.
    with strategy.scope():
        model._symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None


def _known_length(dataset, clips, batch_size, drop_remainder):
    # The record count is in dataset.json; telling tf.data lets Keras show
    # real progress bars and end epochs without an out-of-data warning.
    import tensorflow as tf

    batches = clips // batch_size if drop_remainder else -(-clips // batch_size)
    return dataset.apply(tf.data.experimental.assert_cardinality(batches))


def _prepare_run_dir(run_dir, record, backup_dir, overwrite):
    config_path = os.path.join(run_dir, CONFIG_FILE)
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise RunError(f"{run_dir}: exists and is not a directory")
    # Other workers of a multi-worker run may already have made `.workers/`.
    if os.path.isdir(run_dir) and set(os.listdir(run_dir)) - {WORKERS_DIR}:
        finished = is_finished_run(run_dir)
        resumable = os.path.isdir(backup_dir) and os.path.isfile(config_path)
        if overwrite:
            for name in set(os.listdir(run_dir)) - {WORKERS_DIR}:
                path = os.path.join(run_dir, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
        elif finished and not resumable:
            raise RunError(
                f"{run_dir}: holds a finished run; choose another --out or pass --overwrite"
            )
        elif os.path.isfile(config_path):
            try:
                with open(config_path, encoding="utf-8") as f:
                    existing = json.load(f)
            except (OSError, json.JSONDecodeError) as error:
                raise RunError(f"{config_path}: unreadable: {error}") from None
            if existing.get("format") != RUN_FORMAT:
                raise RunError(f"{run_dir}: holds files that are not a keras-mre run")
            if _comparable(existing) != _comparable(record):
                raise RunError(
                    f"{run_dir}: holds an unfinished run with a different configuration; "
                    "rerun with the same arguments to resume it, or pass --overwrite"
                )
        else:
            raise RunError(f"{run_dir}: exists, is not empty and is not a keras-mre run")
    os.makedirs(run_dir, exist_ok=True)
    _write_json_atomic(config_path, record)
