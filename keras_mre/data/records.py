"""The TFRecord encoding of one clip, shared by the writer and the reader.

One `tf.train.Example` per clip:

| feature | type | content |
|---|---|---|
| `id` | bytes | clip id, UTF-8 |
| `<m>` | bytes | the `T x D_m` frames, float32 little-endian, row-major |
| `<m>_length` | int64 | `T`, the number of stored frames |
| `<m>_mean` | bytes | the mean of the `T` frames, `D_m` float32 little-endian (zeros when `T` is 0); in data sets whose `dataset.json` has `frame_means: true` |
| `emotion` | int64 | multimodal class id |
| `emotion_<m>` | int64 | unimodal class id of `<m>`, -1 when unknown |
| `score` | float | regression score (only when the data set has one; NaN = unknown) |

Frames are one bytes feature rather than a float list so that a batch of
records decodes with a single `tf.io.decode_raw` call, which also pads or
truncates every clip to the maximum length in the same step. The frame means
are stored so that a pipeline feeding a model that reads a modality only
through its mean (`load_dataset(pool=...)`) parses `D_m` values per clip
instead of the whole `T x D_m` sequence: the pooling is done once, when the
data set is written.
"""

import re

import numpy as np

from keras_mre.data import schema

BYTES_PER_VALUE = 4
FRAME_DTYPE = np.dtype("<f4")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
RESERVED_NAMES = (schema.ID_KEY, schema.LABEL_KEY, schema.SCORE_KEY)


def check_modality_names(modalities):
    """Return the reason the modality names cannot be used, or None."""
    keys = set()
    for m in modalities:
        if not isinstance(m, str) or not _NAME.match(m):
            return f"modality name {m!r} must be letters, digits and '_', starting with a letter"
        if m in RESERVED_NAMES:
            return f"modality name {m!r} is reserved"
        for key in (m, schema.length_key(m), schema.mean_key(m), schema.unimodal_label_key(m)):
            if key in keys or key in RESERVED_NAMES:
                return f"modality {m!r} gives the record key {key!r} twice"
            keys.add(key)
    return None


def frame_mean(frames):
    """Mean of `[T, D]` float32 frames over time, float32 `[D]` (zeros if T = 0).

    Summed in float64, so that the stored mean is the exact mean rounded once.
    """
    if frames.shape[0] == 0:
        return np.zeros(frames.shape[1], FRAME_DTYPE)
    return frames.mean(axis=0, dtype=np.float64).astype(FRAME_DTYPE)


def encode_example(clip_id, frames, lengths, label, unimodal, score, has_score, means=None):
    """Serialize one clip.

    Args:
        clip_id: Clip id (str).
        frames: Dict modality -> float32 little-endian array `[T, D]`.
        lengths: Dict modality -> int `T`.
        label: Multimodal class id.
        unimodal: Dict modality -> unimodal class id (-1 unknown), one entry
            per modality.
        score: Float regression score (NaN unknown); ignored unless
            `has_score`.
        has_score: Whether to write the `score` feature.
        means: Dict modality -> float32 little-endian `[D]` frame mean
            (`frame_mean`), written as `<m>_mean`; None writes no means.

    Returns:
        The serialized `tf.train.Example` (bytes).
    """
    import tensorflow as tf

    feature = {
        schema.ID_KEY: tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[clip_id.encode("utf-8")])
        ),
        schema.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    }
    for m, array in frames.items():
        feature[m] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[array.tobytes()]))
        feature[schema.length_key(m)] = tf.train.Feature(
            int64_list=tf.train.Int64List(value=[lengths[m]])
        )
        feature[schema.unimodal_label_key(m)] = tf.train.Feature(
            int64_list=tf.train.Int64List(value=[unimodal[m]])
        )
        if means is not None:
            feature[schema.mean_key(m)] = tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[means[m].tobytes()])
            )
    if has_score:
        feature[schema.SCORE_KEY] = tf.train.Feature(
            float_list=tf.train.FloatList(value=[score])
        )
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString()


def feature_spec(info, means=None, frames=None):
    """The `tf.io.parse_example` spec of the records of data set `info`.

    Args:
        info: `DatasetInfo`.
        means: Modalities whose `<m>_mean` to parse (default: all of them
            when the data set stores means, else none).
        frames: Modalities whose frames to parse (default: all). Features
            left out of the spec are skipped by the parser, not copied.
    """
    import tensorflow as tf

    if means is None:
        means = info.modalities if info.frame_means else ()
    if frames is None:
        frames = info.modalities
    spec = {
        schema.ID_KEY: tf.io.FixedLenFeature([], tf.string),
        schema.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }
    for m in info.modalities:
        if m in frames:
            spec[m] = tf.io.FixedLenFeature([], tf.string)
        if m in means:
            spec[schema.mean_key(m)] = tf.io.FixedLenFeature([], tf.string)
        spec[schema.length_key(m)] = tf.io.FixedLenFeature([], tf.int64)
        spec[schema.unimodal_label_key(m)] = tf.io.FixedLenFeature(
            [], tf.int64, default_value=schema.UNKNOWN_LABEL
        )
    if info.has_score:
        spec[schema.SCORE_KEY] = tf.io.FixedLenFeature([], tf.float32)
    return spec
