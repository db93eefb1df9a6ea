"""Convert MMSA feature pickles (MOSI, MOSEI, SIMS, SIMSv2) into keras-mre data sets.

An MMSA pickle holds a dict with splits `train`, `valid` and `test` (and, in
files written by MMSA-FET, a `config` entry that is ignored). Each split is a
dict of arrays:

| key | shape | use |
|---|---|---|
| `text` | `[N, L, 768]` | BERT token features -> modality `text` |
| `audio` | `[N, Ta, Da]` | -> modality `audio` |
| `vision` | `[N, Tv, Dv]` | -> modality `vision` |
| `regression_labels` | `[N]` | sentiment score -> `score` and the class label |
| `id` | `[N]` | clip ids (optional; `<split>-<row>` otherwise) |
| `text_bert` | `[N, 3, L]` | token ids / mask / segments; the mask gives the text length |
| `audio_lengths`, `vision_lengths` | `[N]` | valid frames (unaligned files) |
| `regression_labels_T/A/V` | `[N]` | SIMS unimodal scores -> `emotion_text/audio/vision` |

Class labels follow MMSA's metrics (`metricsTop.py`):

- MOSI / MOSEI (scores in [-3, 3]): `binary` = Has0 (score >= 0 is class 1),
  `binary_non0` = Non0 (clips with score 0 are skipped and listed, score > 0
  is class 1), `3class` / `5class` / `7class` = clip to [-1, 1] / [-2, 2] /
  [-3, 3] and round half to even, as numpy does.
- SIMS / SIMSv2 (scores in [-1, 1], clipped): bins `(lo, hi]` with edges
  `binary` 0; `3class` -0.1, 0.1; `5class` -0.7, -0.1, 0.1, 0.7.
- `regression` stores the `binary` classes and the score; the score is the
  target of regression metrics.

Scores are compared in float32, as MMSA's data loader casts them. Feature
values of -inf become 0 (as MMSA does) and are counted; float64 becomes
float32. The pickle is read with a restricted unpickler (see
`keras_mre_pipelines.safe_pickle`) and large arrays are read a block of rows
at a time, so memory stays bounded by one block, not by a split.
"""

import os

import numpy as np

from keras_mre.data import Clip
from keras_mre.data import write_dataset
from keras_mre.errors import ConfigError
from keras_mre.errors import DataError
from keras_mre_pipelines.safe_pickle import LazyArray
from keras_mre_pipelines.safe_pickle import load_pickle

SPLITS = ("train", "valid", "test")
MODALITY_KEYS = {"text": "text", "audio": "audio", "vision": "vision"}
UNIMODAL_SCORE_KEYS = {"text": "regression_labels_T", "audio": "regression_labels_A",
                       "vision": "regression_labels_V"}
DATASETS = ("mosi", "mosei", "sims", "simsv2")
TASKS = ("binary", "binary_non0", "3class", "5class", "7class", "regression")

_CMU_CLASSES = {
    "binary": ["negative", "non-negative"],
    "binary_non0": ["negative", "positive"],
    "3class": ["negative", "neutral", "positive"],
    "5class": ["strongly negative", "negative", "neutral", "positive", "strongly positive"],
    "7class": ["strongly negative", "negative", "weakly negative", "neutral",
               "weakly positive", "positive", "strongly positive"],
}
_CMU_CLIP = {"3class": 1.0, "5class": 2.0, "7class": 3.0}
_SIMS_EDGES = {
    "binary": [0.0],
    "3class": [-0.1, 0.1],
    "5class": [-0.7, -0.1, 0.1, 0.7],
}
_SIMS_CLASSES = {
    "binary": ["negative", "positive"],
    "3class": ["negative", "neutral", "positive"],
    "5class": ["strongly negative", "weakly negative", "neutral", "weakly positive",
               "strongly positive"],
}


def class_names(dataset, task):
    """Class names of `task` for an MMSA `dataset` ("mosi", "mosei", "sims", "simsv2")."""
    _check_task(dataset, task)
    if dataset in ("sims", "simsv2"):
        return list(_SIMS_CLASSES["binary" if task == "regression" else task])
    return list(_CMU_CLASSES["binary" if task == "regression" else task])


def _check_task(dataset, task):
    if dataset not in DATASETS:
        raise ConfigError(f"mmsa: unknown dataset {dataset!r}, expected one of {list(DATASETS)}")
    if task not in TASKS:
        raise ConfigError(f"mmsa: unknown task {task!r}, expected one of {list(TASKS)}")
    if dataset in ("sims", "simsv2") and task not in ("binary", "3class", "5class", "regression"):
        raise ConfigError(
            f"mmsa: task {task!r} is not defined for {dataset} (MMSA's SIMS metrics have "
            "binary, 3class, 5class); use one of those or regression"
        )


def score_to_class(scores, dataset, task):
    """Map sentiment scores to class ids by MMSA's rules.

    Args:
        scores: Array of scores.
        dataset: "mosi", "mosei", "sims" or "simsv2".
        task: One of `TASKS`.

    Returns:
        int64 array of class ids; -1 where the task has no class for the
        score (score 0 under `binary_non0`).
    """
    _check_task(dataset, task)
    scores = np.asarray(scores, dtype=np.float32)
    task = "binary" if task == "regression" else task
    if dataset in ("sims", "simsv2"):
        clipped = np.clip(scores, np.float32(-1.0), np.float32(1.0))
        edges = np.array(_SIMS_EDGES[task], dtype=np.float32)
        return np.searchsorted(edges, clipped, side="left").astype(np.int64)
    if task == "binary":
        return (scores >= 0).astype(np.int64)
    if task == "binary_non0":
        return np.where(scores == 0, -1, (scores > 0).astype(np.int64))
    bound = np.float32(_CMU_CLIP[task])
    return (np.round(np.clip(scores, -bound, bound)) + bound).astype(np.int64)


def _detect_dataset(split_data):
    if UNIMODAL_SCORE_KEYS["text"] in split_data:
        return "sims"
    size = len(split_data["regression_labels"])
    return "mosei" if size > 5000 else "mosi"


def _vector(value, path, split, key, n):
    array = np.asarray(value)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1 or len(array) != n:
        raise DataError(
            f"{path}: split {split!r} key {key!r} has shape {array.shape}, expected [{n}]"
        )
    return array


def _check_split_keys(path, split, data):
    if not isinstance(data, dict):
        raise DataError(f"{path}: split {split!r} must be a dict of arrays, got {type(data).__name__}")
    for key in ("regression_labels",) + tuple(MODALITY_KEYS.values()):
        if key not in data:
            raise DataError(f"{path}: split {split!r} has no key {key!r}; found {sorted(data)}")


class _Split:
    """The arrays of one split, checked; clips are produced block by block."""

    def __init__(self, path, split, data, dataset, task, chunk_size):
        self.path = path
        self.split = split
        _check_split_keys(path, split, data)
        self.scores = self._numbers(data["regression_labels"], "regression_labels")
        n = len(self.scores)
        self.n = n
        self.features = {}
        for m, key in MODALITY_KEYS.items():
            array = data[key]
            if not isinstance(array, (np.ndarray, LazyArray)):
                raise DataError(f"{path}: split {split!r} key {key!r} is {type(array).__name__}, expected an array")
            if array.dtype.kind not in "fiu":
                raise DataError(
                    f"{path}: split {split!r} key {key!r} has dtype {array.dtype}, expected numbers"
                )
            if array.ndim != 3 or array.shape[0] != n:
                raise DataError(
                    f"{path}: split {split!r} key {key!r} has shape {tuple(array.shape)}, "
                    f"expected [{n}, frames, dim]"
                )
            self.features[m] = array
        self.lengths = {}
        if "text_bert" in data:
            bert = np.asarray(data["text_bert"])
            if bert.ndim != 3 or bert.shape[0] != n or bert.shape[1] != 3:
                raise DataError(
                    f"{path}: split {split!r} key 'text_bert' has shape {bert.shape}, expected [{n}, 3, L]"
                )
            self.lengths["text"] = bert[:, 1].astype(np.int64).sum(axis=1)
        for m in ("audio", "vision"):
            key = f"{m}_lengths"
            if key in data:
                self.lengths[m] = self._numbers(data[key], key, n).astype(np.int64)
            elif "text" in self.lengths and self.features[m].shape[1] == self.features["text"].shape[1]:
                # Aligned files share the text's time axis and its padding.
                self.lengths[m] = self.lengths["text"]
        self.aligned = "audio_lengths" not in data and "vision_lengths" not in data
        self.lengths_clipped = {}
        for m, lengths in self.lengths.items():
            frames = self.features[m].shape[1]
            if (lengths < 0).any():
                row = int(np.flatnonzero(lengths < 0)[0])
                raise DataError(f"{path}: split {split!r} row {row}: {m} length {lengths[row]} is negative")
            self.lengths_clipped[m] = int((lengths > frames).sum())
            self.lengths[m] = np.minimum(lengths, frames)
        ids = data.get("id")
        if ids is None:
            self.ids = [f"{split}-{i}" for i in range(n)]
        else:
            self.ids = [str(i) for i in _vector(ids, path, split, "id", n)]
        self.unimodal_scores = {}
        for m, key in UNIMODAL_SCORE_KEYS.items():
            if key in data:
                self.unimodal_scores[m] = self._numbers(data[key], key, n)
        self.dataset = dataset
        self.task = task
        self.chunk_size = chunk_size
        self.neg_inf = {m: 0 for m in MODALITY_KEYS}
        self.skipped = []

    def _numbers(self, value, key, n=None):
        if not isinstance(value, (np.ndarray, LazyArray, list)):
            raise DataError(f"{self.path}: split {self.split!r} key {key!r} is {type(value).__name__}, expected an array")
        array = np.asarray(value)
        if array.dtype.kind not in "fiu":
            raise DataError(
                f"{self.path}: split {self.split!r} key {key!r} has dtype {array.dtype}, expected numbers"
            )
        if n is None:
            n = len(array) if array.ndim else 0
        array = _vector(array, self.path, self.split, key, n)
        if not np.isfinite(array).all():
            row = int(np.flatnonzero(~np.isfinite(array))[0])
            raise DataError(
                f"{self.path}: split {self.split!r} key {key!r} row {row} is {array[row]}"
            )
        return array

    def __len__(self):
        return self.n

    def _block(self, m, start, stop):
        array = self.features[m]
        block = array.rows(start, stop) if isinstance(array, LazyArray) else array[start:stop]
        block = np.asarray(block, dtype=np.float32)
        mask = np.isneginf(block)
        count = int(mask.sum())
        if count:
            block = np.where(mask, np.float32(0), block)
            self.neg_inf[m] += count
        return block

    def __iter__(self):
        labels = score_to_class(self.scores, self.dataset, self.task)
        unimodal = {m: score_to_class(s, self.dataset, self.task)
                    for m, s in self.unimodal_scores.items()}
        for start in range(0, self.n, self.chunk_size):
            stop = min(start + self.chunk_size, self.n)
            blocks = {m: self._block(m, start, stop) for m in MODALITY_KEYS}
            for row in range(start, stop):
                if labels[row] < 0:
                    self.skipped.append({
                        "id": self.ids[row], "split": self.split,
                        "reason": f"score {self.scores[row]} has no class in task {self.task}",
                    })
                    continue
                features = {}
                for m, block in blocks.items():
                    frames = block[row - start]
                    if m in self.lengths:
                        frames = frames[: self.lengths[m][row]]
                    features[m] = frames
                yield Clip(
                    id=self.ids[row],
                    features=features,
                    label=int(labels[row]),
                    unimodal_labels={m: int(u[row]) for m, u in unimodal.items()},
                    score=float(self.scores[row]),
                )


def convert_mmsa(
    pickle_path,
    out_dir,
    *,
    task="binary",
    dataset=None,
    name=None,
    shard_size=1000,
    compression=None,
    overwrite=False,
    progress=True,
    chunk_size=64,
):
    """Convert an MMSA feature pickle into a keras-mre data set.

    Args:
        pickle_path: The MMSA pickle (aligned or unaligned MOSI, MOSEI,
            SIMS or SIMSv2 layout).
        out_dir: Target data set directory.
        task: One of `TASKS`; decides the class labels (see module doc).
        dataset: "mosi", "mosei", "sims" or "simsv2"; detected when None
            (SIMS family when `regression_labels_T` exists, else MOSEI when
            the train split has more than 5,000 clips, else MOSI).
        name: Data set name (default: the pickle's file name without
            extension).
        shard_size: Clips per shard file.
        compression: None or "GZIP".
        overwrite: Replace an existing data set directory.
        progress: Show progress bars.
        chunk_size: Rows read from the pickle at a time (bounds memory).

    Returns:
        The `DatasetInfo` of the written data set. Its provenance records
        the source, task, detected data set, and counts of -inf values set
        to 0 and of lengths cut to the array's frames, per split and modality.

    Raises:
        DataError: unsafe or unreadable pickle, missing split or key, wrong
            shapes or dtypes, non-finite labels or features.
        ConfigError: unknown task or dataset, or a task the dataset lacks.
    """
    pickle_path = os.fspath(pickle_path)
    if task not in TASKS:
        raise ConfigError(f"mmsa: unknown task {task!r}, expected one of {list(TASKS)}")
    if dataset is not None and dataset not in DATASETS:
        raise ConfigError(f"mmsa: unknown dataset {dataset!r}, expected one of {list(DATASETS)}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"mmsa: chunk_size must be a positive integer, got {chunk_size!r}")
    content = load_pickle(pickle_path)
    if not isinstance(content, dict):
        raise DataError(
            f"{pickle_path}: top level must be a dict with splits {list(SPLITS)}, "
            f"got {type(content).__name__}"
        )
    missing = [s for s in SPLITS if s not in content]
    if missing:
        found = sorted(str(k) for k in content)
        raise DataError(f"{pickle_path}: no split {missing[0]!r}; found keys {found}")
    for split in SPLITS:
        _check_split_keys(pickle_path, split, content[split])
    detected = dataset or _detect_dataset(content["train"])
    _check_task(detected, task)
    splits = {s: _Split(pickle_path, s, content[s], detected, task, chunk_size) for s in SPLITS}

    dims = {}
    for m in MODALITY_KEYS:
        widths = {s: split.features[m].shape[2] for s, split in splits.items()}
        if len(set(widths.values())) != 1:
            raise DataError(f"{pickle_path}: key {m!r} has different feature dims per split: {widths}")
        dims[m] = int(widths["train"])
    max_lengths = {m: int(max(split.features[m].shape[1] for split in splits.values()))
                   for m in MODALITY_KEYS}
    unimodal = {m: all(m in split.unimodal_scores for split in splits.values())
                for m in MODALITY_KEYS}
    for s, split in splits.items():
        for m in MODALITY_KEYS:
            if m in split.unimodal_scores and not unimodal[m]:
                raise DataError(
                    f"{pickle_path}: split {s!r} has {UNIMODAL_SCORE_KEYS[m]!r} but another split lacks it"
                )

    provenance = {
        "source": "mmsa",
        "pickle": os.path.abspath(pickle_path),
        "pickle_bytes": os.path.getsize(pickle_path),
        "dataset": detected,
        "task": task,
        "aligned": all(split.aligned for split in splits.values()),
        "label_rules": "MMSA metricsTop.py binning of regression_labels",
    }
    # write_dataset reads provenance and skipped after the last clip, so the
    # counts filled in while the splits stream end up in dataset.json.
    skipped = []
    for split in splits.values():
        split.skipped = skipped
    provenance["neg_inf_replaced"] = {s: split.neg_inf for s, split in splits.items()}
    provenance["lengths_clipped"] = {s: split.lengths_clipped for s, split in splits.items()}
    return write_dataset(
        out_dir,
        splits,
        feature_dims=dims,
        class_names=class_names(detected, task),
        max_lengths=max_lengths,
        name=name or os.path.splitext(os.path.basename(pickle_path))[0],
        unimodal_labels=unimodal,
        has_score=True,
        shard_size=shard_size,
        compression=compression,
        provenance=provenance,
        skipped=skipped,
        overwrite=overwrite,
        progress=progress,
    )


def _run(args):
    info = convert_mmsa(
        args.pickle,
        args.out,
        task=args.task,
        dataset=args.dataset,
        name=args.name,
        shard_size=args.shard_size,
        compression=args.compression,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    splits = ", ".join(f"{s} {n}" for s, n in info.splits.items())
    replaced = sum(sum(v.values()) for v in info.provenance["neg_inf_replaced"].values())
    print(f"wrote {info.path}: {info.provenance['dataset']} {info.provenance['task']}, "
          f"{info.num_classes} classes, {splits} clips; {replaced} -inf values set to 0; "
          f"{len(info.skipped)} clips skipped")
    return 0


def add_parser(subparsers):
    """Add the `mmsa` converter to the `convert` sub-command's `subparsers`."""
    parser = subparsers.add_parser(
        "mmsa",
        help="convert an MMSA feature pickle (MOSI/MOSEI/SIMS/SIMSv2)",
        description="Convert an MMSA feature pickle into a keras-mre data set. "
                    "The pickle is loaded with a restricted unpickler.",
    )
    parser.add_argument("pickle", metavar="PKL", help="MMSA feature pickle")
    parser.add_argument("--out", required=True, help="target data set directory")
    parser.add_argument("--task", choices=TASKS, default="binary")
    parser.add_argument("--dataset", choices=DATASETS, default=None,
                        help="label conventions (detected when omitted)")
    parser.add_argument("--name", default=None, help="data set name")
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--compression", choices=["GZIP"], default=None)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing data set directory")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    parser.set_defaults(handler=_run)
    return parser
