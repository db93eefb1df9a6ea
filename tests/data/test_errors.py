"""Every bad input to the data set format fails with one clear DataError."""

import json
import os
import struct

import numpy as np
import pytest
import tensorflow as tf

from keras_mre import data
from keras_mre.errors import DataError

DIMS = {"text": 4, "audio": 3}
MAX_LENGTHS = {"text": 5, "audio": 6}


def clip(i, **changes):
    fields = dict(
        id=f"c{i}",
        features={"text": np.ones((3, 4)), "audio": np.full((2, 3), float(i))},
        label=i % 2,
    )
    fields.update(changes)
    return data.Clip(**fields)


def write(path, clips, **kwargs):
    options = dict(feature_dims=DIMS, class_names=["neg", "pos"], max_lengths=MAX_LENGTHS,
                   name="e", shard_size=4, progress=False)
    options.update(kwargs)
    return data.write_dataset(path, {"train": clips}, **options)


@pytest.mark.parametrize("bad, message", [
    (clip(1, features={"text": np.ones((3, 5)), "audio": np.ones((2, 3))}),
     r"clip 'c1' field 'text': frame width 5 disagrees with feature_dims\['text'\] = 4"),
    (clip(1, features={"text": np.ones((3, 4)), "audio": np.array([[1.0, np.inf, 0]])}),
     r"clip 'c1' field 'audio': non-finite value inf at frame 0, column 1"),
    (clip(1, features={"text": np.full((1, 4), 1e300), "audio": np.ones((2, 3))}),
     r"clip 'c1' field 'text': non-finite value inf .*\(as float32\)"),
    (clip(1, features={"text": np.ones((3, 4)), "audio": np.ones((2, 3)), "face": np.ones((1, 2))}),
     r"clip 'c1': unknown modality 'face', the data set has \['text', 'audio'\]"),
    (clip(1, features={"text": np.ones((3, 4))}),
     r"clip 'c1': missing modality 'audio' \(give a \[0, 3\] array"),
    (clip(1, features={"text": np.ones(4), "audio": np.ones((2, 3))}),
     r"clip 'c1' field 'text': frames must be \[T, 4\], got shape \(4,\)"),
    (clip(1, features={"text": np.array([["a"] * 4]), "audio": np.ones((2, 3))}),
     r"clip 'c1' field 'text': frames must be numbers, got dtype <U1"),
    (clip(1, label=2), r"clip 'c1' field 'emotion': class id 2 is outside the class list, expected 0\.\.1"),
    (clip(1, label=-1), r"clip 'c1' field 'emotion': class id -1 is outside the class list"),
    (clip(1, label="pos"), r"clip 'c1' field 'emotion': class id must be an integer, got 'pos'"),
    (clip(1, unimodal_labels={"audio": 5}),
     r"clip 'c1' field 'emotion_audio': class id 5 is outside the class list, expected -1\.\.1"),
    (clip(1, unimodal_labels={"face": 1}), r"clip 'c1': unimodal label for unknown modality 'face'"),
    (clip(1, score=0.3), r"clip 'c1' field 'score': has a score but has_score=False"),
    (clip(1, id=""), r"split 'train' item 1: clip id must be a non-empty string"),
    (clip(0), r"split 'train' item 1: clip id 'c0' appears twice"),
    ("not a clip", r"split 'train' item 1: expected a keras_mre.data.Clip, got str"),
])
def test_bad_clips_name_clip_and_field(tmp_path, bad, message):
    with pytest.raises(DataError, match=message):
        write(tmp_path / "ds", [clip(0), bad])
    assert not os.path.exists(tmp_path / "ds")


def test_declared_unimodal_labels_are_enforced(tmp_path):
    with pytest.raises(DataError, match=r"field 'emotion_text': has a label but unimodal_labels\['text'\] is False"):
        write(tmp_path / "ds", [clip(0, unimodal_labels={"text": 1})],
              unimodal_labels={"audio": True})
    with pytest.raises(DataError, match=r"clip 'c0' field 'score': is inf"):
        write(tmp_path / "ds", [clip(0, score=float("inf"))], has_score=True)


@pytest.fixture
def dataset(tmp_path):
    write(tmp_path / "ds", [clip(i) for i in range(10)])
    return tmp_path / "ds"


def edit_info(path, change):
    target = path / "dataset.json"
    stored = json.loads(target.read_text())
    change(stored)
    target.write_text(json.dumps(stored))


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("class_names"), r"dataset.json: missing required field 'class_names'"),
    (lambda d: d.update(feature_dims=[4, 3]), r"field 'feature_dims' must be object, got list"),
    (lambda d: d.update(has_score="yes"), r"field 'has_score' must be boolean, got str"),
    (lambda d: d.update(format_version=99),
     r"format_version 99 is newer than this keras-mre reads \(1\); upgrade keras-mre"),
    (lambda d: d.update(feature_dims={"text": 4}),
     r"field 'feature_dims' has keys \['text'\], expected the modalities \['text', 'audio'\]"),
    (lambda d: d.update(max_lengths={"text": 0, "audio": 3}),
     r"field 'max_lengths.text' must be a positive integer, got 0"),
    (lambda d: d.update(num_classes=3), r"field 'num_classes' is 3 but 'class_names' has 2 entries"),
    (lambda d: d.update(shards={}), r"field 'shards' has splits \[\], expected \['train'\]"),
    (lambda d: d.update(compression="LZ4"), r"field 'compression' must be null or 'GZIP', got 'LZ4'"),
    (lambda d: d.update(format_version=True), r"field 'format_version' must be integer, got bool"),
    (lambda d: d.update(frame_means="yes"), r"field 'frame_means' must be boolean, got str"),
])
def test_malformed_dataset_json(dataset, change, message):
    edit_info(dataset, change)
    with pytest.raises(DataError, match=message):
        data.load_info(dataset)
    with pytest.raises(DataError, match=message):
        data.load_dataset(dataset, "train")


def test_missing_or_unreadable_dataset_json(tmp_path, dataset):
    with pytest.raises(DataError, match=r"nowhere: data set directory not found"):
        data.load_info(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty/dataset.json: not found; .* is not a keras-mre data set"):
        data.load_info(tmp_path / "empty")
    (dataset / "dataset.json").write_text('{"name": "x",\n  "splits": }')
    with pytest.raises(DataError, match=r"dataset.json: invalid JSON at line 2 column 13"):
        data.load_info(dataset)
    (dataset / "dataset.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"top level must be a JSON object, got list"):
        data.load_info(dataset)


def test_missing_shard(dataset):
    os.remove(dataset / "train-00001-of-00003.tfrecord")
    with pytest.raises(DataError, match=r"train-00001-of-00003.tfrecord: shard listed in dataset.json for split 'train' is missing"):
        data.load_dataset(dataset, "train")


def record_offsets(path):
    """Byte offsets of the records of a TFRecord file (length, crc, data, crc)."""
    blob = path.read_bytes()
    offsets, position = [], 0
    while position < len(blob):
        (length,) = struct.unpack("<Q", blob[position:position + 8])
        offsets.append((position, length))
        position += 8 + 4 + length + 4
    return blob, offsets


def test_corrupt_record_is_named(dataset):
    shard = dataset / "train-00001-of-00003.tfrecord"
    blob, offsets = record_offsets(shard)
    start, length = offsets[2]
    damaged = bytearray(blob)
    damaged[start + 12 + length // 2] ^= 0xFF
    shard.write_bytes(bytes(damaged))
    with pytest.raises(DataError, match=r"train-00001-of-00003.tfrecord: corrupt or truncated at record 2 \(records before it are intact\)"):
        data.verify_dataset(dataset)
    with pytest.raises(DataError, match=r"train-00001-of-00003.tfrecord: corrupt or truncated at record 2"):
        data.load_dataset(dataset, "train", verify=True)
    with pytest.raises(tf.errors.DataLossError):
        list(data.load_dataset(dataset, "train", shuffle=False))


def test_truncated_shard_is_named(dataset):
    shard = dataset / "train-00002-of-00003.tfrecord"
    blob, offsets = record_offsets(shard)
    shard.write_bytes(blob[: offsets[1][0] + 20])
    with pytest.raises(DataError, match=r"train-00002-of-00003.tfrecord: corrupt or truncated at record 1"):
        data.verify_dataset(dataset)


def test_record_width_disagreeing_with_dataset_json(dataset):
    edit_info(dataset, lambda d: d["feature_dims"].update(audio=2))
    with pytest.raises(DataError, match=r"train-00000-of-00003.tfrecord: record 0 \(clip 'c0'\) field 'audio': frame width 3 disagrees with feature_dims\['audio'\] = 2"):
        data.verify_dataset(dataset)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"split train: field audio holds a byte count that disagrees.*\] \[c0 c1"):
        list(data.load_dataset(dataset, "train", shuffle=False))


def test_record_missing_a_feature(dataset):
    edit_info(dataset, lambda d: d.update(has_score=True))
    with pytest.raises(DataError, match=r"train-00000-of-00003.tfrecord: record 0 does not match dataset.json: .*score"):
        data.verify_dataset(dataset)


def test_label_outside_class_list_in_records(dataset):
    edit_info(dataset, lambda d: (d.update(class_names=["neg"]), d.pop("num_classes")))
    with pytest.raises(DataError, match=r"record 1 \(clip 'c1'\) field 'emotion': class id 1 outside 0\.\.0"):
        data.verify_dataset(dataset)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"field emotion outside 0\.\.0; clip ids:\] \[c1 c3"):
        list(data.load_dataset(dataset, "train", shuffle=False))


def rewrite_mean(shard, index, value):
    """Replace the stored audio mean of record `index` of `shard` by `value` bytes."""
    kept = [r.numpy() for r in tf.data.TFRecordDataset(str(shard))]
    example = tf.train.Example.FromString(kept[index])
    example.features.feature["audio_mean"].bytes_list.value[0] = value
    kept[index] = example.SerializeToString()
    with tf.io.TFRecordWriter(str(shard)) as writer:
        for record in kept:
            writer.write(record)


def test_stored_mean_of_the_wrong_size(dataset):
    rewrite_mean(dataset / "train-00000-of-00003.tfrecord", 1, b"\x00" * 8)
    with pytest.raises(DataError, match=r"train-00000-of-00003.tfrecord: record 1 \(clip 'c1'\) field 'audio_mean': 8 bytes, expected feature_dims\['audio'\] x 4 = 12"):
        data.verify_dataset(dataset)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"split train: field audio_mean holds a byte count other than feature_dims\[audio\]=3 x 4.*\] \[c1\]"):
        list(data.load_dataset(dataset, "train", shuffle=False, pool=["audio"]))


def test_stored_mean_disagreeing_with_the_frames(dataset):
    # clip c6's audio frames are all 6.0; store 7.0 in one column.
    rewrite_mean(dataset / "train-00001-of-00003.tfrecord", 2,
                 np.array([6.0, 7.0, 6.0], "<f4").tobytes())
    with pytest.raises(DataError, match=r"train-00001-of-00003.tfrecord: record 2 \(clip 'c6'\) field 'audio_mean': value 7.0 at column 1 is not the mean of the 2 frames of field 'audio' \(6.0\)"):
        data.verify_dataset(dataset)


def test_split_count_disagreeing_with_dataset_json(dataset):
    edit_info(dataset, lambda d: d["splits"].update(train=12))
    with pytest.raises(DataError, match=r"split 'train' has 10 records in its shards, dataset.json says 12"):
        data.verify_dataset(dataset)
    with pytest.raises(tf.errors.OpError, match=r"expected to contain 12 elements"):
        list(data.load_dataset(dataset, "train", shuffle=False))
