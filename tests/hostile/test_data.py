"""Hostile inputs to keras_mre.data: dataset.json, shards, records and clips.

tests/data/test_errors.py holds the field-by-field catalogue of the format;
this file adds what a damaged or foreign data set looks like from the
reader's side, and the clip values a producer can get wrong.
"""

import json
import os
import shutil

import numpy as np
import pytest

from keras_mre import data
from keras_mre.errors import DataError

DIMS = {"text": 6, "audio": 4, "vision": 3}


def edit_info(path, change):
    target = os.path.join(path, "dataset.json")
    with open(target) as f:
        stored = json.load(f)
    change(stored)
    with open(target, "w") as f:
        json.dump(stored, f)


def write_one(tmp_path, clip, **kwargs):
    options = dict(feature_dims=DIMS, class_names=["a", "b"], max_lengths={m: 5 for m in DIMS},
                   name="one", progress=False)
    options.update(kwargs)
    return data.write_dataset(str(tmp_path / "one"), {"train": [clip]}, **options)


def make_clip(**changes):
    fields = dict(id="c0", features={m: np.ones((2, d), np.float32) for m, d in DIMS.items()},
                  label=0)
    fields.update(changes)
    return data.Clip(**fields)


# ----------------------------------------------------------------- dataset.json


def test_empty_dataset_json(data_copy):
    open(os.path.join(data_copy, "dataset.json"), "w").close()
    with pytest.raises(DataError, match=r"data/dataset.json: invalid JSON at line 1 column 1"):
        data.load_info(data_copy)


def test_binary_dataset_json(data_copy):
    with open(os.path.join(data_copy, "dataset.json"), "wb") as f:
        f.write(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match=r"data/dataset.json: cannot read: 'utf-8' codec"):
        data.load_info(data_copy)


@pytest.mark.parametrize("field, value, message", [
    ("format_version", "1", r"field 'format_version' must be integer, got str '1'"),
    ("format_version", 1.0, r"field 'format_version' must be integer, got float 1.0"),
    ("splits", {"train": "16", "valid": 16, "test": 16}, r"field 'splits.train' must be a count >= 0, got '16'"),
    ("modalities", "text", r"field 'modalities' must be list, got str 'text'"),
    ("name", None, r"field 'name' must be string, got NoneType None"),
    ("feature_dims", {"text": 6.0, "audio": 4, "vision": 3}, r"field 'feature_dims.text' must be a positive integer, got 6.0"),
    ("class_names", [0, 1, 2], r"field 'class_names' must be a non-empty list of strings"),
])
def test_dataset_json_wrong_types(data_copy, field, value, message):
    edit_info(data_copy, lambda d: d.update({field: value}))
    with pytest.raises(DataError, match=r"data/dataset.json: " + message):
        data.load_dataset(data_copy, "train")


def test_dataset_json_missing_field_and_newer_version(data_copy):
    edit_info(data_copy, lambda d: d.pop("shards"))
    with pytest.raises(DataError, match=r"dataset.json: missing required field 'shards'"):
        data.load_info(data_copy)
    edit_info(data_copy, lambda d: d.update(shards={}, format_version=7))
    with pytest.raises(DataError, match=r"format_version 7 is newer than this keras-mre reads \(1\); upgrade keras-mre"):
        data.load_info(data_copy)


def test_huge_max_length_in_dataset_json(data_copy):
    edit_info(data_copy, lambda d: d["max_lengths"].update(text=10**9))
    with pytest.raises(DataError, match=r"data/dataset.json: field 'max_lengths.text' x 'feature_dims.text' x 4 bytes = 24000000000 per clip exceeds the limit of 2147483647 bytes"):
        data.load_dataset(data_copy, "train")


def test_shard_path_outside_the_data_set(data_copy, tmp_path):
    outside = tmp_path / "elsewhere.tfrecord"
    shutil.copy(os.path.join(data_copy, "train-00000-of-00002.tfrecord"), outside)
    edit_info(data_copy, lambda d: d["shards"].update(train=["../elsewhere.tfrecord"]))
    with pytest.raises(DataError, match=r"field 'shards.train' entry '\.\./elsewhere.tfrecord' must be a file name inside the data set directory"):
        data.load_info(data_copy)


# ----------------------------------------------------------------------- shards


def test_empty_shard_is_named(data_copy):
    shard = os.path.join(data_copy, "train-00001-of-00002.tfrecord")
    open(shard, "w").close()
    with pytest.raises(DataError, match=r"data/train-00001-of-00002.tfrecord: holds no records \(every shard listed in dataset.json holds at least one clip\)"):
        data.load_dataset(data_copy, "train", verify=True)


def test_bit_flipped_length_header_is_named(data_copy):
    # A flip in the first record's length field (not its payload).
    shard = os.path.join(data_copy, "valid-00000-of-00002.tfrecord")
    with open(shard, "rb") as f:
        blob = bytearray(f.read())
    blob[2] ^= 0x01
    with open(shard, "wb") as f:
        f.write(bytes(blob))
    with pytest.raises(DataError, match=r"valid-00000-of-00002.tfrecord: corrupt or truncated at record 0"):
        data.verify_dataset(data_copy, ["valid"])


def test_shard_from_another_data_set(data_copy, synth_data):
    # Same split and shard name, other feature dims: every record is named.
    foreign = sorted(f for f in os.listdir(synth_data) if f.startswith("train-"))[0]
    shutil.copy(os.path.join(synth_data, foreign),
                os.path.join(data_copy, "train-00000-of-00002.tfrecord"))
    with pytest.raises(DataError, match=r"train-00000-of-00002.tfrecord: record 0 \(clip 'train-\d+'\) field 'text': frame width 768 disagrees with feature_dims\['text'\] = 6"):
        data.verify_dataset(data_copy, ["train"])


def test_nan_written_past_the_writer_is_named(data_copy):
    # A record produced by another tool with NaN frames.
    import tensorflow as tf

    from keras_mre.data import records

    frames = {m: np.full((1, d), np.nan, "<f4") for m, d in DIMS.items()}
    means = {m: records.frame_mean(f) for m, f in frames.items()}
    serialized = records.encode_example(
        "rogue", frames, {m: 1 for m in DIMS}, 0, {m: -1 for m in DIMS}, None, False, means)
    shard = os.path.join(data_copy, "test-00001-of-00002.tfrecord")
    kept = [r.numpy() for r in tf.data.TFRecordDataset(shard)][:-1]
    with tf.io.TFRecordWriter(shard) as writer:
        for record in kept + [serialized]:
            writer.write(record)
    with pytest.raises(DataError, match=r"test-00001-of-00002.tfrecord: record 7 \(clip 'rogue'\) field 'text': holds NaN or Inf values"):
        data.verify_dataset(data_copy, ["test"])


# ------------------------------------------------------------------------ clips


@pytest.mark.parametrize("label, message", [
    ("1", r"class id must be an integer, got '1'"),
    (1.5, r"class id must be an integer, got 1.5"),
    (float("nan"), r"class id must be an integer, got nan"),
    (True, r"class id must be an integer, got True"),
    (2, r"class id 2 is outside the class list, expected 0\.\.1"),
    (2**70, r"class id 1180591620717411303424 is outside the class list"),
])
def test_bad_labels(tmp_path, label, message):
    with pytest.raises(DataError, match=r"clip 'c0' field 'emotion': " + message):
        write_one(tmp_path, make_clip(label=label))
    assert os.listdir(tmp_path) == []


def test_integral_float_label_is_accepted(tmp_path):
    info = write_one(tmp_path, make_clip(label=1.0))
    assert info.class_counts == {"train": [0, 1]}


@pytest.mark.parametrize("value, message", [
    (np.nan, r"non-finite value nan at frame 1, column 2"),
    (-np.inf, r"non-finite value -inf at frame 1, column 2"),
    (1e39, r"non-finite value inf at frame 1, column 2 \(as float32\)"),
])
def test_non_finite_and_overflowing_frames(tmp_path, value, message):
    frames = np.ones((3, 4))
    frames[1, 2] = value
    features = {m: np.ones((2, d)) for m, d in DIMS.items()}
    features["audio"] = frames
    with pytest.raises(DataError, match=r"clip 'c0' field 'audio': " + message):
        write_one(tmp_path, make_clip(features=features))
    assert os.listdir(tmp_path) == []


def test_clip_id_not_utf8(tmp_path):
    with pytest.raises(DataError, match=r"split 'train' item 0: clip id 'clip-\\udcff' is not valid UTF-8"):
        write_one(tmp_path, make_clip(id="clip-\udcff"))
    assert os.listdir(tmp_path) == []


def test_longer_sequences_are_cut_and_counted(tmp_path):
    features = {m: np.arange(9 * d, dtype=np.float32).reshape(9, d) for m, d in DIMS.items()}
    info = write_one(tmp_path, make_clip(features=features))
    assert info.truncated == {"text": 1, "audio": 1, "vision": 1}
    batch, _ = next(iter(data.load_dataset(info.path, "train", 1)))
    assert batch["audio"].shape == (1, 5, 4)
    assert batch["audio_length"].numpy().tolist() == [5]
    np.testing.assert_array_equal(batch["audio"][0].numpy(), features["audio"][:5])


def test_zero_length_clips_in_every_modality(tmp_path):
    empty = {m: np.zeros((0, d)) for m, d in DIMS.items()}
    one_dimensional = {m: np.zeros(0) for m in DIMS}
    clips = [make_clip(id="empty", features=empty),
             make_clip(id="flat", features=one_dimensional, label=1)]
    info = data.write_dataset(str(tmp_path / "z"), {"train": clips}, feature_dims=DIMS,
                              class_names=["a", "b"], max_lengths={m: 5 for m in DIMS},
                              name="z", progress=False)
    assert data.verify_dataset(info.path) == {"train": 2}
    batch, labels = next(iter(data.load_dataset(info.path, "train", 2, shuffle=False)))
    for m in DIMS:
        assert batch[f"{m}_length"].numpy().tolist() == [0, 0]
        assert not batch[m].numpy().any()
    assert labels["emotion"].numpy().tolist() == [0, 1]
