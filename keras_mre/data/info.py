"""Data set metadata: the `dataset.json` file of a keras-mre data set.

A data set is a directory holding `dataset.json` and the TFRecord shards of
each split. `dataset.json` is the single source of truth for modalities,
feature dims, maximum lengths, classes and which labels exist; nothing in the
package assumes them.
"""

import dataclasses
import json
import os

from keras_mre.errors import DataError

FORMAT_VERSION = 1
INFO_FILENAME = "dataset.json"
COMPRESSIONS = (None, "GZIP")
# One modality of one clip, padded, must fit in a TensorFlow string (2 GiB).
MAX_CLIP_BYTES = 2**31 - 1


@dataclasses.dataclass
class DatasetInfo:
    """Metadata of a keras-mre data set, as stored in `dataset.json`.

    Attributes:
        name: Data set name.
        modalities: Ordered list of modality names; this order is the
            modality order everywhere (model inputs, relevance weights).
        feature_dims: Ordered dict, modality -> frame width `D_m`.
        max_lengths: Dict, modality -> maximum number of frames `T_m`;
            batches are padded or truncated to it.
        class_names: List of class names; class id `i` is `class_names[i]`.
        unimodal_labels: Dict, modality -> whether the records carry a
            unimodal class label for it (absent labels read as -1).
        has_score: Whether the records carry a regression score.
        splits: Ordered dict, split name -> number of clips.
        shards: Dict, split name -> list of shard file names, relative to
            the data set directory.
        compression: `None` or `"GZIP"`.
        provenance: Free-form dict saying where the data came from.
        skipped: List of `{"id", "split", "reason"}` dicts for clips the
            producer left out.
        truncated: Dict, modality -> number of clips whose frames were cut
            to the maximum length when the data set was written.
        class_counts: Dict, split name -> list of clip counts per class.
        frame_means: Whether every record also stores the mean of each
            modality's frames (`<m>_mean`), which pooled pipelines read
            instead of the frames. Data sets written before keras-mre
            stored them have False, and are pooled when read.
        format_version: Version of the on-disk format.
        path: Directory the metadata was read from (not stored in the file).
    """

    name: str
    modalities: list
    feature_dims: dict
    max_lengths: dict
    class_names: list
    unimodal_labels: dict
    has_score: bool
    splits: dict
    shards: dict
    compression: str | None = None
    provenance: dict = dataclasses.field(default_factory=dict)
    skipped: list = dataclasses.field(default_factory=list)
    truncated: dict = dataclasses.field(default_factory=dict)
    class_counts: dict = dataclasses.field(default_factory=dict)
    frame_means: bool = False
    format_version: int = FORMAT_VERSION
    path: str | None = dataclasses.field(default=None, compare=False)

    @property
    def num_classes(self):
        """Number of classes, `len(class_names)`."""
        return len(self.class_names)

    @property
    def num_clips(self):
        """Total number of clips over all splits."""
        return sum(self.splits.values())

    def to_dict(self):
        """The JSON-safe dict written to `dataset.json`."""
        return {
            "format_version": self.format_version,
            "name": self.name,
            "modalities": list(self.modalities),
            "feature_dims": {m: int(self.feature_dims[m]) for m in self.modalities},
            "max_lengths": {m: int(self.max_lengths[m]) for m in self.modalities},
            "class_names": list(self.class_names),
            "num_classes": self.num_classes,
            "unimodal_labels": {
                m: bool(self.unimodal_labels.get(m, False)) for m in self.modalities
            },
            "has_score": bool(self.has_score),
            "splits": {s: int(n) for s, n in self.splits.items()},
            "shards": {s: list(files) for s, files in self.shards.items()},
            "compression": self.compression,
            "provenance": dict(self.provenance),
            "skipped": list(self.skipped),
            "truncated": {m: int(n) for m, n in self.truncated.items()},
            "class_counts": {
                s: [int(n) for n in counts] for s, counts in self.class_counts.items()
            },
            "frame_means": bool(self.frame_means),
        }

    def shard_paths(self, split):
        """Absolute paths of the shards of `split`; unknown split -> DataError."""
        self.check_split(split)
        base = self.path or "."
        return [os.path.join(base, f) for f in self.shards[split]]

    def check_split(self, split):
        """Raise DataError when `split` is not a split of this data set."""
        if split not in self.splits:
            raise DataError(
                f"{_where(self.path)}: unknown split {split!r}; "
                f"the data set has {sorted(self.splits)}"
            )


def _where(path):
    if path is None:
        return INFO_FILENAME
    return os.path.join(path, INFO_FILENAME)


# Field name -> (allowed JSON types, required).
_FIELDS = {
    "format_version": ((int,), True),
    "name": ((str,), True),
    "modalities": ((list,), True),
    "feature_dims": ((dict,), True),
    "max_lengths": ((dict,), True),
    "class_names": ((list,), True),
    "num_classes": ((int,), False),
    "unimodal_labels": ((dict,), False),
    "has_score": ((bool,), False),
    "splits": ((dict,), True),
    "shards": ((dict,), True),
    "compression": ((str, type(None)), False),
    "provenance": ((dict,), False),
    "skipped": ((list,), False),
    "truncated": ((dict,), False),
    "class_counts": ((dict,), False),
    "frame_means": ((bool,), False),
}


def _type_name(types):
    names = {int: "integer", str: "string", list: "list", dict: "object",
             bool: "boolean", type(None): "null"}
    return " or ".join(names[t] for t in types)


def info_from_dict(data, path=None):
    """Validate a parsed `dataset.json` dict and build a DatasetInfo.

    Args:
        data: The parsed JSON object.
        path: Directory the file came from, used in error messages.

    Raises:
        DataError: naming the file and the field that is missing, has the
            wrong type or disagrees with another field.
    """
    where = _where(path)
    if not isinstance(data, dict):
        raise DataError(f"{where}: top level must be a JSON object, got {type(data).__name__}")
    for field, (types, required) in _FIELDS.items():
        if field not in data:
            if required:
                raise DataError(f"{where}: missing required field {field!r}")
            continue
        value = data[field]
        bad_bool = isinstance(value, bool) and bool not in types
        if not isinstance(value, types) or bad_bool:
            raise DataError(
                f"{where}: field {field!r} must be {_type_name(types)}, "
                f"got {type(value).__name__} {value!r:.60}"
            )
    version = data["format_version"]
    if version > FORMAT_VERSION:
        raise DataError(
            f"{where}: format_version {version} is newer than this keras-mre "
            f"reads ({FORMAT_VERSION}); upgrade keras-mre"
        )
    if version < 1:
        raise DataError(f"{where}: format_version must be >= 1, got {version}")

    modalities = data["modalities"]
    if not modalities or not all(isinstance(m, str) and m for m in modalities):
        raise DataError(f"{where}: field 'modalities' must be a non-empty list of names")
    if len(set(modalities)) != len(modalities):
        raise DataError(f"{where}: field 'modalities' has duplicates: {modalities}")
    for field in ("feature_dims", "max_lengths"):
        mapping = data[field]
        if set(mapping) != set(modalities):
            raise DataError(
                f"{where}: field {field!r} has keys {sorted(mapping)}, "
                f"expected the modalities {modalities}"
            )
        for m, value in mapping.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DataError(
                    f"{where}: field '{field}.{m}' must be a positive integer, got {value!r}"
                )
    for m in modalities:
        frame_bytes = data["max_lengths"][m] * data["feature_dims"][m] * 4
        if frame_bytes > MAX_CLIP_BYTES:
            raise DataError(
                f"{where}: field 'max_lengths.{m}' x 'feature_dims.{m}' x 4 bytes = "
                f"{frame_bytes} per clip exceeds the limit of {MAX_CLIP_BYTES} bytes"
            )
    class_names = data["class_names"]
    if not class_names or not all(isinstance(c, str) for c in class_names):
        raise DataError(f"{where}: field 'class_names' must be a non-empty list of strings")
    if "num_classes" in data and data["num_classes"] != len(class_names):
        raise DataError(
            f"{where}: field 'num_classes' is {data['num_classes']} but "
            f"'class_names' has {len(class_names)} entries"
        )
    unimodal = data.get("unimodal_labels", {})
    for m, value in unimodal.items():
        if m not in modalities:
            raise DataError(f"{where}: field 'unimodal_labels' names unknown modality {m!r}")
        if not isinstance(value, bool):
            raise DataError(f"{where}: field 'unimodal_labels.{m}' must be a boolean")
    splits = data["splits"]
    if not splits:
        raise DataError(f"{where}: field 'splits' is empty")
    for split, count in splits.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise DataError(
                f"{where}: field 'splits.{split}' must be a count >= 0, got {count!r}"
            )
    shards = data["shards"]
    if set(shards) != set(splits):
        raise DataError(
            f"{where}: field 'shards' has splits {sorted(shards)}, "
            f"expected {sorted(splits)} as in 'splits'"
        )
    for split, files in shards.items():
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise DataError(f"{where}: field 'shards.{split}' must be a list of file names")
        for name in files:
            if os.path.basename(name) != name or name in ("", ".", ".."):
                raise DataError(
                    f"{where}: field 'shards.{split}' entry {name!r} must be a file "
                    "name inside the data set directory"
                )
    compression = data.get("compression")
    if compression not in COMPRESSIONS:
        raise DataError(
            f"{where}: field 'compression' must be null or 'GZIP', got {compression!r}"
        )
    return DatasetInfo(
        name=data["name"],
        modalities=list(modalities),
        feature_dims={m: data["feature_dims"][m] for m in modalities},
        max_lengths={m: data["max_lengths"][m] for m in modalities},
        class_names=list(class_names),
        unimodal_labels={m: bool(unimodal.get(m, False)) for m in modalities},
        has_score=bool(data.get("has_score", False)),
        splits=dict(splits),
        shards={s: list(shards[s]) for s in splits},
        compression=compression,
        provenance=dict(data.get("provenance", {})),
        skipped=list(data.get("skipped", [])),
        truncated=dict(data.get("truncated", {})),
        class_counts=dict(data.get("class_counts", {})),
        frame_means=data.get("frame_means", False),
        format_version=version,
        path=None if path is None else os.fspath(path),
    )


def load_info(path):
    """Read the metadata of the data set in directory `path`.

    Args:
        path: Data set directory (or the `dataset.json` file itself).

    Returns:
        A `DatasetInfo`; `info.feature_dims`, `info.num_classes` and
        `info.class_names` are what `build_model` needs.

    Raises:
        DataError: the directory or file is missing, is not valid JSON, or a
            field is missing, mistyped, or newer than this version reads.
    """
    path = os.fspath(path)
    if os.path.basename(path) == INFO_FILENAME and os.path.isfile(path):
        path = os.path.dirname(path) or "."
    where = _where(path)
    if not os.path.isdir(path):
        raise DataError(f"{path}: data set directory not found")
    try:
        with open(where, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise DataError(
            f"{where}: not found; {path} is not a keras-mre data set "
            "(or its writing did not finish)"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{where}: cannot read: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{where}: invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None
    return info_from_dict(data, path)


def save_info(info, path):
    """Write `info` as `dataset.json` into directory `path` and fsync it."""
    target = os.path.join(path, INFO_FILENAME)
    with open(target, "w", encoding="utf-8") as f:
        json.dump(info.to_dict(), f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    return target
