"""Writing keras-mre data sets: validated clips into sharded TFRecord files."""

import copy
import dataclasses
import json
import math
import numbers
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Mapping

import numpy as np

from keras_mre._processes import owner_is_dead
from keras_mre._processes import this_host
from keras_mre.data import records
from keras_mre.data import schema
from keras_mre.data.info import COMPRESSIONS
from keras_mre.data.info import FORMAT_VERSION
from keras_mre.data.info import INFO_FILENAME
from keras_mre.data.info import DatasetInfo
from keras_mre.data.info import save_info
from keras_mre.errors import ConfigError
from keras_mre.errors import DataError

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclasses.dataclass
class Clip:
    """One clip to write into a data set.

    Attributes:
        id: Clip id, unique within the data set.
        features: Dict modality -> frames `[T, D_m]` (any float or int
            dtype; stored as float32). `T` may be 0.
        label: Multimodal class id in `[0, num_classes)`.
        unimodal_labels: Dict modality -> unimodal class id; a missing
            modality or -1 means unknown.
        score: Regression score, when the data set has one (None or NaN =
            unknown).
    """

    id: str
    features: dict
    label: int
    unimodal_labels: dict = dataclasses.field(default_factory=dict)
    score: float | None = None


def clips_from_arrays(
    ids, features, lengths, labels, unimodal_labels=None, scores=None
):
    """Yield `Clip`s from padded arrays, one clip per row.

    Args:
        ids: Sequence of `N` clip ids.
        features: Dict modality -> array `[N, T, D]`.
        lengths: Dict modality -> array `[N]` of valid frame counts, or None
            (every frame valid). A modality missing from the dict has all
            frames valid.
        labels: Array `[N]` of multimodal class ids.
        unimodal_labels: Optional dict modality -> array `[N]` (-1 unknown).
        scores: Optional array `[N]` of regression scores.

    Yields:
        `Clip` objects whose frames are views of the input rows cut to their
        lengths (no copy is made here).
    """
    lengths = lengths or {}
    unimodal_labels = unimodal_labels or {}
    n = len(ids)
    for m, array in features.items():
        if len(array) != n:
            raise DataError(
                f"clips_from_arrays: features[{m!r}] has {len(array)} rows, expected {n} (len(ids))"
            )
    for name, array in (("labels", labels), ("scores", scores)):
        if array is not None and len(array) != n:
            raise DataError(f"clips_from_arrays: {name} has {len(array)} rows, expected {n}")
    for i in range(n):
        clip_features = {}
        for m, array in features.items():
            if m in lengths:
                length = int(lengths[m][i])
                if length < 0 or length > array.shape[1]:
                    raise DataError(
                        f"clips_from_arrays: clip {ids[i]!r} field '{m}_length' is {length}, "
                        f"expected 0..{array.shape[1]}"
                    )
                clip_features[m] = array[i, :length]
            else:
                clip_features[m] = array[i]
        yield Clip(
            id=str(ids[i]),
            features=clip_features,
            label=labels[i],
            unimodal_labels={m: u[i] for m, u in unimodal_labels.items()},
            score=None if scores is None else float(scores[i]),
        )


def _as_class_id(value, clip_id, field, num_classes, allow_unknown):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        if isinstance(value, (float, np.floating)) and float(value).is_integer():
            value = int(value)
        else:
            raise DataError(
                f"clip {clip_id!r} field {field!r}: class id must be an integer, got {value!r}"
            )
    value = int(value)
    low = schema.UNKNOWN_LABEL if allow_unknown else 0
    if value < low or value >= num_classes:
        expected = f"{low}..{num_classes - 1}" + (" (-1 = unknown)" if allow_unknown else "")
        raise DataError(
            f"clip {clip_id!r} field {field!r}: class id {value} is outside the "
            f"class list, expected {expected}"
        )
    return value


class _ClipEncoder:
    """Validates clips against the data set description and serializes them."""

    def __init__(self, feature_dims, max_lengths, num_classes, unimodal_labels, has_score):
        self.feature_dims = feature_dims
        self.max_lengths = max_lengths
        self.num_classes = num_classes
        self.declared_unimodal = unimodal_labels
        self.has_score = has_score
        self.seen_unimodal = {m: False for m in feature_dims}
        self.truncated = {m: 0 for m in feature_dims}
        self.ids = set()

    def encode(self, clip, split, index):
        if not isinstance(clip, Clip):
            raise DataError(
                f"split {split!r} item {index}: expected a keras_mre.data.Clip, "
                f"got {type(clip).__name__}"
            )
        clip_id = clip.id
        if not isinstance(clip_id, str) or not clip_id:
            raise DataError(f"split {split!r} item {index}: clip id must be a non-empty string, got {clip_id!r}")
        try:
            clip_id.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(
                f"split {split!r} item {index}: clip id {clip_id!r} is not valid UTF-8"
            ) from None
        if clip_id in self.ids:
            raise DataError(f"split {split!r} item {index}: clip id {clip_id!r} appears twice")
        self.ids.add(clip_id)
        if not isinstance(clip.features, Mapping):
            raise DataError(f"clip {clip_id!r}: features must be a dict modality -> [T, D] array")
        unknown = sorted(set(clip.features) - set(self.feature_dims))
        if unknown:
            raise DataError(
                f"clip {clip_id!r}: unknown modality {unknown[0]!r}, "
                f"the data set has {list(self.feature_dims)}"
            )
        frames = {}
        lengths = {}
        for m, dim in self.feature_dims.items():
            if m not in clip.features:
                raise DataError(
                    f"clip {clip_id!r}: missing modality {m!r} (give a [0, {dim}] array "
                    "for a clip without it)"
                )
            frames[m], lengths[m] = self._frames(clip_id, m, clip.features[m], dim)

        label = _as_class_id(clip.label, clip_id, schema.LABEL_KEY, self.num_classes, False)
        given = clip.unimodal_labels or {}
        unknown = sorted(set(given) - set(self.feature_dims))
        if unknown:
            raise DataError(
                f"clip {clip_id!r}: unimodal label for unknown modality {unknown[0]!r}"
            )
        unimodal = {}
        for m in self.feature_dims:
            value = given.get(m)
            field = schema.unimodal_label_key(m)
            value = schema.UNKNOWN_LABEL if value is None else _as_class_id(
                value, clip_id, field, self.num_classes, True
            )
            if value != schema.UNKNOWN_LABEL:
                if self.declared_unimodal is not None and not self.declared_unimodal.get(m):
                    raise DataError(
                        f"clip {clip_id!r} field {field!r}: has a label but "
                        f"unimodal_labels[{m!r}] is False"
                    )
                self.seen_unimodal[m] = True
            unimodal[m] = value

        score = clip.score
        if score is not None:
            if not self.has_score:
                raise DataError(
                    f"clip {clip_id!r} field 'score': has a score but has_score=False"
                )
            try:
                score = float(score)
            except (TypeError, ValueError):
                raise DataError(
                    f"clip {clip_id!r} field 'score': must be a number, got {score!r}"
                ) from None
            if math.isinf(score):
                raise DataError(f"clip {clip_id!r} field 'score': is {score} (NaN means unknown)")
        elif self.has_score:
            score = float("nan")
        means = {m: records.frame_mean(array) for m, array in frames.items()}
        return records.encode_example(
            clip_id, frames, lengths, label, unimodal, score, self.has_score, means
        ), label

    def _frames(self, clip_id, m, value, dim):
        array = np.asarray(value)
        if array.dtype.kind not in "fiu":
            raise DataError(
                f"clip {clip_id!r} field {m!r}: frames must be numbers, got dtype {array.dtype}"
            )
        if array.ndim == 1 and array.size == 0:
            array = array.reshape(0, dim)
        if array.ndim != 2:
            raise DataError(
                f"clip {clip_id!r} field {m!r}: frames must be [T, {dim}], got shape {array.shape}"
            )
        if array.shape[1] != dim:
            raise DataError(
                f"clip {clip_id!r} field {m!r}: frame width {array.shape[1]} disagrees with "
                f"feature_dims[{m!r}] = {dim}"
            )
        max_length = self.max_lengths[m]
        if array.shape[0] > max_length:
            array = array[:max_length]
            self.truncated[m] += 1
        with np.errstate(over="ignore", invalid="ignore"):
            # Values beyond float32's range become inf and are refused below.
            array = np.ascontiguousarray(array, dtype=records.FRAME_DTYPE)
        if not np.isfinite(array).all():
            bad = np.argwhere(~np.isfinite(array))[0]
            raise DataError(
                f"clip {clip_id!r} field {m!r}: non-finite value {array[tuple(bad)]} at "
                f"frame {bad[0]}, column {bad[1]} (as float32)"
            )
        return array, int(array.shape[0])


def _check_arguments(feature_dims, class_names, max_lengths, name, unimodal_labels,
                     shard_size, compression):
    if not isinstance(feature_dims, Mapping) or not feature_dims:
        raise ConfigError("write_dataset: feature_dims must be a non-empty dict modality -> dim")
    problem = records.check_modality_names(list(feature_dims))
    if problem:
        raise ConfigError(f"write_dataset: feature_dims: {problem}")
    for m, dim in feature_dims.items():
        if not isinstance(dim, numbers.Integral) or dim < 1:
            raise ConfigError(f"write_dataset: feature_dims[{m!r}] must be a positive integer, got {dim!r}")
    if not isinstance(max_lengths, Mapping) or set(max_lengths) != set(feature_dims):
        got = sorted(max_lengths) if isinstance(max_lengths, Mapping) else max_lengths
        raise ConfigError(
            f"write_dataset: max_lengths must have the modalities {list(feature_dims)} as keys, got {got}"
        )
    for m, length in max_lengths.items():
        if not isinstance(length, numbers.Integral) or length < 1:
            raise ConfigError(f"write_dataset: max_lengths[{m!r}] must be a positive integer, got {length!r}")
    if not class_names or not all(isinstance(c, str) for c in class_names):
        raise ConfigError("write_dataset: class_names must be a non-empty list of strings")
    if len(set(class_names)) != len(class_names):
        raise ConfigError(f"write_dataset: class_names has duplicates: {list(class_names)}")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"write_dataset: name must be a non-empty string, got {name!r}")
    if unimodal_labels is not None:
        unknown = sorted(set(unimodal_labels) - set(feature_dims))
        if unknown:
            raise ConfigError(f"write_dataset: unimodal_labels names unknown modality {unknown[0]!r}")
    if not isinstance(shard_size, numbers.Integral) or shard_size < 1:
        raise ConfigError(f"write_dataset: shard_size must be a positive integer, got {shard_size!r}")
    if compression not in COMPRESSIONS:
        raise ConfigError(f"write_dataset: compression must be None or 'GZIP', got {compression!r}")


def _fsync_file(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_target(out_dir, overwrite):
    if not os.path.lexists(out_dir):
        return
    if not overwrite:
        raise DataError(f"{out_dir}: already exists; pass overwrite=True (--overwrite) to replace it")
    if not os.path.isdir(out_dir):
        raise DataError(f"{out_dir}: exists and is not a directory; refusing to replace it")
    entries = os.listdir(out_dir)
    if entries and INFO_FILENAME not in entries:
        raise DataError(
            f"{out_dir}: exists and is not a keras-mre data set (no {INFO_FILENAME}); "
            "refusing to replace it"
        )


_WRITER_FILE = ".writer.json"


def _record_writer(tmp_dir):
    """Notes which process writes `tmp_dir`, so a later writer can tell a
    directory left by a killed one from one still being written."""
    with open(os.path.join(tmp_dir, _WRITER_FILE), "w") as f:
        json.dump({"pid": os.getpid(), "host": this_host()}, f)


def _remove_stale_partials(out_dir):
    """Removes the `.NAME.<random>.partial` siblings of `out_dir` left by writers
    of this host that are no longer running; returns their paths.

    A directory whose writer is unknown (no or unreadable writer file), on
    another host, or still running is left alone.
    """
    parent, base = os.path.split(out_dir)
    pattern = re.compile(rf"^\.{re.escape(base)}\.[^.]+\.partial$")
    try:
        names = sorted(os.listdir(parent))
    except OSError:
        return []
    removed = []
    for entry in names:
        path = os.path.join(parent, entry)
        if not pattern.match(entry) or not os.path.isdir(path):
            continue
        try:
            with open(os.path.join(path, _WRITER_FILE)) as f:
                writer = json.load(f)
            pid, writer_host = int(writer["pid"]), str(writer["host"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not owner_is_dead(pid, writer_host):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _write_split(tmp_dir, split, clips, encoder, shard_size, compression, progress, name):
    import tensorflow as tf
    from tqdm.auto import tqdm

    options = tf.io.TFRecordOptions(compression_type=compression or "")
    partial_names = []
    writer = None
    count = 0
    class_counts = [0] * encoder.num_classes
    total = len(clips) if hasattr(clips, "__len__") else None
    bar = tqdm(total=total, desc=f"{name}/{split}", unit="clip", disable=not progress,
               leave=False)
    try:
        for index, clip in enumerate(clips):
            serialized, label = encoder.encode(clip, split, index)
            if count % shard_size == 0:
                if writer is not None:
                    writer.close()
                partial = os.path.join(tmp_dir, f"{split}-{len(partial_names):05d}.partial")
                partial_names.append(partial)
                writer = tf.io.TFRecordWriter(partial, options)
            writer.write(serialized)
            class_counts[label] += 1
            count += 1
            bar.update(1)
    finally:
        if writer is not None:
            writer.close()
        bar.close()
    suffix = ".tfrecord.gz" if compression == "GZIP" else ".tfrecord"
    final_names = []
    for i, partial in enumerate(partial_names):
        final = f"{split}-{i:05d}-of-{len(partial_names):05d}{suffix}"
        _fsync_file(partial)
        os.replace(partial, os.path.join(tmp_dir, final))
        final_names.append(final)
    return count, final_names, class_counts


def write_dataset(
    out_dir,
    clips_by_split,
    *,
    feature_dims,
    class_names,
    max_lengths,
    name,
    unimodal_labels=None,
    has_score=False,
    shard_size=1000,
    compression=None,
    provenance=None,
    skipped=None,
    overwrite=False,
    progress=True,
):
    """Validate clips and write them as a keras-mre data set directory.

    The data set is written into a temporary sibling directory, every file
    is fsynced, `dataset.json` is written last, and the directory is renamed
    to `out_dir` only when complete: a crash never leaves a half-written data
    set under `out_dir`. The temporary directory records its writer's process
    id and host; temporary directories of `out_dir` left by killed writers of
    this host are removed at the start of the next write, with a
    `RuntimeWarning` naming them.

    Args:
        out_dir: Target directory; must not exist unless `overwrite`.
        clips_by_split: Ordered mapping split name -> iterable of `Clip`
            (iterated once, so generators stream with bounded memory).
        feature_dims: Ordered dict modality -> frame width; its order is the
            modality order of the data set.
        class_names: List of class names.
        max_lengths: Dict modality -> maximum frames; longer clips are cut
            (and counted in `info.truncated`).
        name: Data set name.
        unimodal_labels: Dict modality -> bool (which modalities carry
            unimodal labels), or None to record the modalities for which any
            clip has a known unimodal label.
        has_score: Whether clips carry a regression score.
        shard_size: Clips per shard file.
        compression: None or "GZIP".
        provenance: JSON-safe dict describing the source.
        skipped: List of `{"id", "split", "reason"}` dicts for clips the
            producer left out; stored in `dataset.json`. Both `provenance`
            and `skipped` are read after the last clip was written, so a
            producer may fill them in while its clips stream.
        overwrite: Replace an existing data set directory.
        progress: Show a progress bar per split.

    Returns:
        The `DatasetInfo` of the written data set.

    Raises:
        DataError: invalid clip (naming clip id and field: NaN/Inf frames,
            width mismatch, class id outside the class list, unknown
            modality), or `out_dir` exists without `overwrite`.
        ConfigError: invalid arguments.
    """
    feature_dims = {m: int(d) for m, d in feature_dims.items()} if isinstance(
        feature_dims, Mapping) else feature_dims
    _check_arguments(feature_dims, class_names, max_lengths, name, unimodal_labels,
                     shard_size, compression)
    if not isinstance(clips_by_split, Mapping) or not clips_by_split:
        raise ConfigError("write_dataset: clips_by_split must be a non-empty dict split -> clips")
    for split in clips_by_split:
        if not isinstance(split, str) or not _SPLIT_NAME.match(split):
            raise ConfigError(
                f"write_dataset: split name {split!r} must be letters, digits and '_'"
            )
    out_dir = os.path.abspath(os.fspath(out_dir))
    _check_target(out_dir, overwrite)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)

    max_lengths = {m: int(max_lengths[m]) for m in feature_dims}
    declared = None if unimodal_labels is None else {
        m: bool(unimodal_labels.get(m, False)) for m in feature_dims
    }
    encoder = _ClipEncoder(feature_dims, max_lengths, len(class_names), declared, has_score)
    stale = _remove_stale_partials(out_dir)
    if stale:
        warnings.warn(
            f"{out_dir}: removed {len(stale)} temporary director"
            f"{'y' if len(stale) == 1 else 'ies'} left by killed writers: "
            + ", ".join(os.path.basename(path) for path in stale),
            RuntimeWarning,
            stacklevel=2,
        )
    tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", suffix=".partial",
                               dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_dir, 0o777 & ~umask)
    try:
        _record_writer(tmp_dir)
        splits = {}
        shards = {}
        class_counts = {}
        for split, clips in clips_by_split.items():
            count, names, counts = _write_split(
                tmp_dir, split, clips, encoder, shard_size, compression, progress, name
            )
            splits[split] = count
            shards[split] = names
            class_counts[split] = counts
        info = DatasetInfo(
            name=name,
            modalities=list(feature_dims),
            feature_dims=dict(feature_dims),
            max_lengths=max_lengths,
            class_names=list(class_names),
            unimodal_labels=declared if declared is not None else dict(encoder.seen_unimodal),
            has_score=bool(has_score),
            splits=splits,
            shards=shards,
            compression=compression,
            provenance=copy.deepcopy(dict(provenance or {})),
            skipped=[dict(s) for s in (skipped or [])],
            truncated=dict(encoder.truncated),
            class_counts=class_counts,
            frame_means=True,
            format_version=FORMAT_VERSION,
        )
        save_info(info, tmp_dir)
        os.remove(os.path.join(tmp_dir, _WRITER_FILE))
        _fsync_dir(tmp_dir)
        trash = None
        if os.path.lexists(out_dir):
            _check_target(out_dir, overwrite)
            trash = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.", suffix=".old",
                                     dir=parent)
            os.replace(out_dir, os.path.join(trash, "data"))
        os.replace(tmp_dir, out_dir)
        _fsync_dir(parent)
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    info.path = out_dir
    return info
