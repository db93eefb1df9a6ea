"""Writing and reading keras-mre data sets: round trips, padding, options."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from keras_mre import data
from keras_mre.data import schema
from keras_mre.data.reader import shard_policy
from keras_mre.errors import ConfigError
from keras_mre.errors import DataError

DIMS = {"text": 6, "audio": 3, "vision": 4}
MAX_LENGTHS = {"text": 5, "audio": 7, "vision": 4}
CLASSES = ["neutral", "happy", "sad"]


def make_clips(prefix, n, seed=0, with_score=False):
    rng = np.random.default_rng(seed)
    clips = []
    for i in range(n):
        features = {
            m: rng.normal(size=(int(rng.integers(0, MAX_LENGTHS[m] + 3)), d))
            for m, d in DIMS.items()
        }
        unimodal = {"audio": int(rng.integers(3))}
        if i % 2:
            unimodal["vision"] = -1
        clips.append(data.Clip(
            id=f"{prefix}{i}", features=features, label=i % 3, unimodal_labels=unimodal,
            score=float(rng.uniform(-3, 3)) if with_score else None,
        ))
    return clips


def write(path, splits, **kwargs):
    options = dict(feature_dims=DIMS, class_names=CLASSES, max_lengths=MAX_LENGTHS,
                   name="tiny", shard_size=4, progress=False)
    options.update(kwargs)
    return data.write_dataset(path, splits, **options)


def expected_batch(clips):
    """Numpy reference: pad/cut every modality to its max length."""
    features, labels = {}, {schema.LABEL_KEY: [], **{schema.unimodal_label_key(m): [] for m in DIMS}}
    for m, d in DIMS.items():
        frames = np.zeros((len(clips), MAX_LENGTHS[m], d), np.float32)
        lengths = np.zeros(len(clips), np.int32)
        for i, clip in enumerate(clips):
            x = clip.features[m][: MAX_LENGTHS[m]].astype(np.float32)
            frames[i, : len(x)] = x
            lengths[i] = len(x)
        features[m] = frames
        features[schema.length_key(m)] = lengths
    for clip in clips:
        labels[schema.LABEL_KEY].append(clip.label)
        for m in DIMS:
            labels[schema.unimodal_label_key(m)].append(clip.unimodal_labels.get(m, -1))
    return features, {k: np.array(v, np.int32) for k, v in labels.items()}


def test_round_trip_matches_numpy_reference(tmp_path):
    train = make_clips("a", 11)
    test = make_clips("b", 3, seed=1)
    info = write(tmp_path / "ds", {"train": train, "test": test})
    assert info.splits == {"train": 11, "test": 3}
    assert info.shards["train"] == [f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert info.unimodal_labels == {"text": False, "audio": True, "vision": False}
    assert info.class_counts["train"] == [4, 4, 3]
    loaded = data.load_info(tmp_path / "ds")
    assert loaded == info
    assert loaded.feature_dims == DIMS and list(loaded.feature_dims) == list(DIMS)
    assert loaded.num_classes == 3

    ds = data.load_dataset(tmp_path / "ds", "train", batch_size=32, shuffle=False)
    (features, labels), = list(ds)
    want_features, want_labels = expected_batch(train)
    assert set(features) == set(want_features)
    for key, want in want_features.items():
        np.testing.assert_array_equal(features[key].numpy(), want, err_msg=key)
        assert features[key].dtype == (tf.float32 if key in DIMS else tf.int32)
    assert set(labels) == set(want_labels)
    for key, want in want_labels.items():
        np.testing.assert_array_equal(labels[key].numpy(), want, err_msg=key)
    truncated = {m: sum(len(c.features[m]) > MAX_LENGTHS[m] for c in train + test) for m in DIMS}
    assert info.truncated == truncated


def test_pool_averages_valid_frames_once_per_clip(tmp_path):
    train = make_clips("a", 11, seed=1)
    assert any(len(c.features["audio"]) == 0 for c in train)  # an empty clip
    assert any(len(c.features["audio"]) > MAX_LENGTHS["audio"] for c in train)  # a cut one
    write(tmp_path / "ds", {"train": train})
    (features, labels), = list(data.load_dataset(
        tmp_path / "ds", "train", batch_size=32, shuffle=False, pool=["audio", "vision"],
        max_lengths={"vision": 2},
    ))
    want, want_labels = expected_batch(train)
    for m, cut in (("audio", MAX_LENGTHS["audio"]), ("vision", 2)):
        mean = np.zeros((len(train), 1, DIMS[m]), np.float32)
        for i, clip in enumerate(train):
            kept = clip.features[m][:cut]
            if len(kept):
                mean[i, 0] = kept.astype(np.float32).mean(axis=0)
        np.testing.assert_allclose(features[m].numpy(), mean, rtol=1e-5, atol=1e-6)
        lengths = [min(len(c.features[m][:cut]), 1) for c in train]
        np.testing.assert_array_equal(features[schema.length_key(m)].numpy(), lengths)
    # Unpooled modalities and the labels are untouched.
    np.testing.assert_array_equal(features["text"].numpy(), want["text"])
    np.testing.assert_array_equal(features["text_length"].numpy(), want["text_length"])
    for key, value in want_labels.items():
        np.testing.assert_array_equal(labels[key].numpy(), value)


def test_scores_ids_and_batching(tmp_path):
    clips = make_clips("a", 10, with_score=True)
    clips[3].score = None
    write(tmp_path / "ds", {"train": clips}, has_score=True)
    ds = data.load_dataset(tmp_path / "ds", "train", batch_size=4, shuffle=False, with_ids=True)
    batches = list(ds)
    assert [len(b[2]) for b in batches] == [4, 4, 2]
    ids = [i.decode() for b in batches for i in b[2].numpy()]
    assert ids == [c.id for c in clips]
    scores = np.concatenate([b[1]["score"].numpy() for b in batches])
    assert np.isnan(scores[3])
    want = np.array([c.score for c in clips if c.score is not None], np.float32)
    np.testing.assert_allclose(np.delete(scores, 3), want)
    dropped = data.load_dataset(tmp_path / "ds", "train", batch_size=4, drop_remainder=True)
    assert [b[1]["emotion"].shape[0] for b in dropped] == [4, 4]
    assert dropped.element_spec[0]["text"].shape == (4, 5, 6)


def test_no_score_key_without_scores(tmp_path):
    write(tmp_path / "ds", {"train": make_clips("a", 3)})
    _, labels = next(iter(data.load_dataset(tmp_path / "ds", "train", batch_size=3)))
    assert "score" not in labels


def test_seeded_shuffle_is_deterministic_and_complete(tmp_path):
    write(tmp_path / "ds", {"train": make_clips("a", 20)})

    def order(seed):
        ds = data.load_dataset(tmp_path / "ds", "train", batch_size=5, seed=seed, with_ids=True)
        return [i.decode() for _, _, ids in ds for i in ids.numpy()]

    first = order(7)
    assert first == order(7)
    cached = data.load_dataset(tmp_path / "ds", "train", batch_size=20, seed=7, cache=True,
                               with_ids=True)
    epochs = [[i.decode() for _, _, ids in cached for i in ids.numpy()] for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(first)
    assert epochs[0] != epochs[1]
    assert sorted(first) == sorted(f"a{i}" for i in range(20))
    assert first != [f"a{i}" for i in range(20)]
    assert first != order(8)


def test_cache_repeat_gzip_and_max_length_override(tmp_path):
    clips = make_clips("a", 6)
    info = write(tmp_path / "ds", {"train": clips}, compression="GZIP")
    assert info.shards["train"][0].endswith(".tfrecord.gz")
    ds = data.load_dataset(tmp_path / "ds", "train", batch_size=6, cache=True, repeat=2,
                           seed=0, max_lengths={"audio": 2})
    batches = list(ds)
    assert len(batches) == 2
    assert batches[0][0]["audio"].shape == (6, 2, 3)
    assert int(tf.reduce_max(batches[0][0]["audio_length"])) <= 2
    assert data.verify_dataset(tmp_path / "ds") == {"train": 6}


def test_clips_from_arrays_respects_lengths(tmp_path):
    n = 4
    rng = np.random.default_rng(0)
    features = {m: rng.normal(size=(n, MAX_LENGTHS[m], d)) for m, d in DIMS.items()}
    lengths = {"audio": np.array([0, 1, 7, 3])}
    clips = list(data.clips_from_arrays(
        [f"c{i}" for i in range(n)], features, lengths, np.array([0, 1, 2, 0]),
        unimodal_labels={"vision": np.array([1, -1, 2, 0])}, scores=np.arange(n) * 0.5,
    ))
    assert [len(c.features["audio"]) for c in clips] == [0, 1, 7, 3]
    assert [len(c.features["text"]) for c in clips] == [5] * n
    assert clips[2].unimodal_labels == {"vision": 2} and clips[3].score == 1.5
    write(tmp_path / "ds", {"test": clips}, has_score=True)
    (feat, labels), = list(data.load_dataset(tmp_path / "ds", "test", batch_size=8))
    np.testing.assert_array_equal(feat["audio_length"].numpy(), [0, 1, 7, 3])
    np.testing.assert_array_equal(labels["emotion_vision"].numpy(), [1, -1, 2, 0])
    with pytest.raises(DataError, match=r"clip 'c1' field 'audio_length' is 9, expected 0\.\.7"):
        list(data.clips_from_arrays(["c0", "c1"], {"audio": features["audio"][:2]},
                                    {"audio": [1, 9]}, [0, 0]))


def test_empty_split_and_unknown_split(tmp_path):
    write(tmp_path / "ds", {"train": make_clips("a", 2), "valid": []})
    assert list(data.load_dataset(tmp_path / "ds", "valid")) == []
    with pytest.raises(DataError, match=r"unknown split 'dev'; the data set has \['train', 'valid'\]"):
        data.load_dataset(tmp_path / "ds", "dev")


def test_fit_accepts_dataset(tmp_path):
    import keras

    write(tmp_path / "ds", {"train": make_clips("a", 8)})
    info = data.load_info(tmp_path / "ds")
    inputs = {}
    pooled = []
    for m, d in info.feature_dims.items():
        inputs[m] = keras.Input((info.max_lengths[m], d), name=m)
        inputs[schema.length_key(m)] = keras.Input((), dtype="int32", name=schema.length_key(m))
        pooled.append(keras.layers.GlobalAveragePooling1D()(inputs[m]))
    out = keras.layers.Dense(info.num_classes, activation="softmax")(
        keras.layers.Concatenate()(pooled))
    model = keras.Model(inputs, {"emotion": out})
    model.compile("adam", {"emotion": "sparse_categorical_crossentropy"})
    ds = data.load_dataset(tmp_path / "ds", "train", batch_size=4).map(
        lambda x, y: (x, {"emotion": y["emotion"]}))
    history = model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("bucket_by", [None, "audio"])
@pytest.mark.parametrize("clips, shard_size, policy", [(16, 4, "FILE"), (10, 4, "DATA")])
def test_workers_split_the_records(tmp_path, clips, shard_size, policy, bucket_by):
    from tensorflow.python.data.experimental.ops.distribute import _AutoShardDataset

    write(tmp_path / "ds", {"train": make_clips("a", clips)}, shard_size=shard_size)
    seen = []
    for index in range(2):
        ds = data.load_dataset(tmp_path / "ds", "train", batch_size=2, seed=3, with_ids=True,
                               num_workers=2, bucket_by=bucket_by, bucket_window=2)
        assert ds.options().experimental_distribute.auto_shard_policy == getattr(
            tf.data.experimental.AutoShardPolicy, policy)
        worker = _AutoShardDataset(ds, 2, index)
        seen.append([i.decode() for _, _, ids in worker for i in ids.numpy()])
    assert sorted(seen[0] + seen[1]) == sorted(f"a{i}" for i in range(clips))
    assert abs(len(seen[0]) - len(seen[1])) <= 2


def test_workers_from_tf_config(tmp_path, monkeypatch):
    write(tmp_path / "ds", {"train": make_clips("a", 8)}, shard_size=2)
    monkeypatch.setenv("TF_CONFIG", json.dumps({
        "cluster": {"worker": ["localhost:1", "localhost:2"]},
        "task": {"type": "worker", "index": 0}}))
    policy = tf.data.experimental.AutoShardPolicy

    def order(ds):
        return [i.decode() for _, _, ids in ds for i in ids.numpy()]

    first = data.load_dataset(tmp_path / "ds", "train", batch_size=8, with_ids=True)
    assert first.options().experimental_distribute.auto_shard_policy == policy.FILE
    again = data.load_dataset(tmp_path / "ds", "train", batch_size=8, with_ids=True)
    assert order(first) == order(again)
    monkeypatch.setenv("TF_CONFIG", "{}")
    single = data.load_dataset(tmp_path / "ds", "train", batch_size=8)
    assert single.options().experimental_distribute.auto_shard_policy == policy.DATA


def test_shard_policy():
    policy = tf.data.experimental.AutoShardPolicy
    assert shard_policy(8, 2) == policy.FILE
    assert shard_policy(3, 2) == policy.DATA
    assert shard_policy(1, 2) == policy.DATA
    assert shard_policy(4, 1) == policy.DATA


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    clips = make_clips("a", 5)
    clips[4].features["audio"][0, 0] = np.nan
    with pytest.raises(DataError, match=r"clip 'a4' field 'audio': non-finite value nan at frame 0"):
        write(tmp_path / "ds", {"train": clips})
    assert os.listdir(tmp_path) == []


def test_overwrite_rules(tmp_path):
    write(tmp_path / "ds", {"train": make_clips("a", 2)})
    with pytest.raises(DataError, match=r"already exists; pass overwrite=True"):
        write(tmp_path / "ds", {"train": make_clips("a", 2)})
    info = write(tmp_path / "ds", {"train": make_clips("b", 3)}, overwrite=True)
    assert info.splits == {"train": 3}
    assert sorted(os.listdir(tmp_path)) == ["ds"]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "x.txt").write_text("keep")
    with pytest.raises(DataError, match=r"is not a keras-mre data set .*refusing"):
        write(other, {"train": make_clips("a", 2)}, overwrite=True)
    assert (other / "x.txt").read_text() == "keep"


def _partial(parent, base, suffix, writer):
    path = parent / f".{base}.{suffix}.partial"
    path.mkdir()
    (path / "train-00000.partial").write_bytes(b"half a shard")
    if writer is not None:
        (path / ".writer.json").write_text(json.dumps(writer))
    return path


def test_next_write_removes_partials_of_killed_writers(tmp_path):
    import subprocess
    import sys

    from keras_mre._processes import this_host

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its pid now names no running process
    host = this_host()
    dead = _partial(tmp_path, "ds", "dead1234", {"pid": finished.pid, "host": host})
    running = _partial(tmp_path, "ds", "live1234", {"pid": os.getppid(), "host": host})
    elsewhere = _partial(tmp_path, "ds", "host1234", {"pid": finished.pid, "host": host + "-x"})
    unknown = _partial(tmp_path, "ds", "anon1234", None)
    other_set = _partial(tmp_path, "other", "dead5678", {"pid": finished.pid, "host": host})
    with pytest.warns(RuntimeWarning, match=r"ds: removed 1 temporary directory left by "
                                            r"killed writers: \.ds\.dead1234\.partial$"):
        write(tmp_path / "ds", {"train": make_clips("a", 2)})
    assert not dead.exists()
    for kept in (running, elsewhere, unknown, other_set):
        assert (kept / "train-00000.partial").exists()
    # The writer file is not part of the finished data set.
    assert ".writer.json" not in os.listdir(tmp_path / "ds")
    assert data.verify_dataset(tmp_path / "ds") == {"train": 2}


def test_dataset_json_example_keys(tmp_path):
    write(tmp_path / "ds", {"train": make_clips("a", 2)}, provenance={"source": "test"},
          skipped=[{"id": "z", "split": "train", "reason": "no audio"}])
    stored = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert stored["format_version"] == data.FORMAT_VERSION
    assert stored["modalities"] == ["text", "audio", "vision"]
    assert stored["skipped"] == [{"id": "z", "split": "train", "reason": "no audio"}]
    assert stored["provenance"] == {"source": "test"}
    assert stored["num_classes"] == 3
    assert stored["frame_means"] is True


def rewrite_records(path, change):
    """Apply `change(example)` to every record of every shard of a data set."""
    for shard in sorted(path.glob("*.tfrecord")):
        kept = []
        for record in tf.data.TFRecordDataset(str(shard)):
            example = tf.train.Example.FromString(record.numpy())
            change(example)
            kept.append(example.SerializeToString())
        with tf.io.TFRecordWriter(str(shard)) as writer:
            for record in kept:
                writer.write(record)


def stored_mean(example, m):
    raw = example.features.feature[schema.mean_key(m)].bytes_list.value[0]
    return np.frombuffer(raw, "<f4")


def test_stored_frame_means_are_the_means_of_the_stored_frames(tmp_path):
    clips = make_clips("a", 9, seed=2)
    info = write(tmp_path / "ds", {"train": clips})
    assert info.frame_means and data.load_info(tmp_path / "ds").frame_means
    by_id = {c.id: c for c in clips}
    seen = []

    def check(example):
        clip_id = example.features.feature["id"].bytes_list.value[0].decode()
        for m in DIMS:
            kept = by_id[clip_id].features[m][: MAX_LENGTHS[m]].astype(np.float32)
            want = kept.astype(np.float64).mean(0) if len(kept) else np.zeros(DIMS[m])
            np.testing.assert_allclose(stored_mean(example, m), want, rtol=1e-6, atol=1e-7)
        seen.append(clip_id)

    rewrite_records(tmp_path / "ds", check)
    assert sorted(seen) == sorted(by_id)


def test_pool_reads_the_stored_means_without_the_frames(tmp_path):
    clips = make_clips("a", 9, seed=2)
    write(tmp_path / "ds", {"train": clips})
    (computed, _), = list(data.load_dataset(
        tmp_path / "ds", "train", batch_size=16, shuffle=False, pool=["audio"],
        max_lengths={"audio": MAX_LENGTHS["audio"] + 1}))  # longer: no stored mean

    def doctor(example):
        # Shift the stored audio mean and damage the audio frames.
        shifted = stored_mean(example, "audio") + 100.0
        example.features.feature["audio_mean"].bytes_list.value[0] = shifted.astype("<f4").tobytes()
        example.features.feature["audio"].bytes_list.value[0] = b"\x00" * 5

    rewrite_records(tmp_path / "ds", doctor)
    (features, _), = list(data.load_dataset(
        tmp_path / "ds", "train", batch_size=16, shuffle=False, pool=["audio", "vision"]))
    np.testing.assert_allclose(features["audio"].numpy(), computed["audio"].numpy() + 100.0,
                               rtol=1e-5)
    np.testing.assert_array_equal(features["audio_length"].numpy(),
                                  [min(len(c.features["audio"]), 1) for c in clips])
    # Read unpooled, or pooled from cut frames, the damaged frames are read.
    for options in ({}, {"pool": ["audio"], "max_lengths": {"audio": 2}}):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"field audio holds a byte count that disagrees"):
            list(data.load_dataset(tmp_path / "ds", "train", shuffle=False, **options))


def test_data_sets_without_stored_means_are_pooled_when_read(tmp_path):
    clips = make_clips("a", 9, seed=2)
    write(tmp_path / "ds", {"train": clips})

    def drop_means(example):
        for m in DIMS:
            del example.features.feature[schema.mean_key(m)]

    rewrite_records(tmp_path / "ds", drop_means)
    target = tmp_path / "ds" / "dataset.json"
    stored = json.loads(target.read_text())
    del stored["frame_means"]  # as written before the means were stored
    target.write_text(json.dumps(stored))
    assert not data.load_info(tmp_path / "ds").frame_means
    assert data.verify_dataset(tmp_path / "ds") == {"train": 9}
    (features, _), = list(data.load_dataset(
        tmp_path / "ds", "train", batch_size=16, shuffle=False, pool=["audio"]))
    for i, clip in enumerate(clips):
        kept = clip.features["audio"][: MAX_LENGTHS["audio"]].astype(np.float32)
        want = kept.mean(0) if len(kept) else np.zeros(DIMS["audio"])
        np.testing.assert_allclose(features["audio"].numpy()[i, 0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"shard_size": 0}, r"shard_size must be a positive integer, got 0"),
    ({"compression": "ZLIB"}, r"compression must be None or 'GZIP', got 'ZLIB'"),
    ({"max_lengths": {"text": 3}}, r"max_lengths must have the modalities"),
    ({"class_names": []}, r"class_names must be a non-empty list"),
    ({"feature_dims": {"emotion": 3}, "max_lengths": {"emotion": 2}}, r"modality name 'emotion' is reserved"),
    ({"feature_dims": {"audio": 3, "audio_mean": 2}, "max_lengths": {"audio": 2, "audio_mean": 2}},
     r"modality 'audio_mean' gives the record key 'audio_mean' twice"),
])
def test_bad_write_arguments(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        write(tmp_path / "ds", {"train": []}, **kwargs)


def test_bad_load_arguments(tmp_path):
    write(tmp_path / "ds", {"train": make_clips("a", 2)})
    with pytest.raises(ConfigError, match=r"batch_size must be a positive integer, got 0"):
        data.load_dataset(tmp_path / "ds", "train", batch_size=0)
    with pytest.raises(ConfigError, match=r"max_lengths names unknown modality 'face'"):
        data.load_dataset(tmp_path / "ds", "train", max_lengths={"face": 3})
    with pytest.raises(ConfigError, match=r"pool names unknown modality 'face'; data set .*ds has text, audio, vision"):
        data.load_dataset(tmp_path / "ds", "train", pool=["audio", "face"])
    with pytest.raises(ConfigError, match=r"pool must be a list of modality names, got 'audio'"):
        data.load_dataset(tmp_path / "ds", "train", pool="audio")
    for bad in ("yes", 1, None):
        with pytest.raises(ConfigError, match=rf"autotune must be True or False, got {bad!r}"):
            data.load_dataset(tmp_path / "ds", "train", autotune=bad)


def test_autotune_is_off_unless_asked_and_reads_the_same(tmp_path):
    write(tmp_path / "ds", {"train": make_clips("a", 9)})

    def read(**kwargs):
        ds = data.load_dataset(tmp_path / "ds", "train", batch_size=4, seed=3,
                               with_ids=True, **kwargs)
        ids = [i.decode() for _, _, batch_ids in ds for i in batch_ids.numpy()]
        return ds.options().autotune.enabled, ids

    off, ids_off = read()
    on, ids_on = read(autotune=True)
    assert (off, on) == (False, True)
    # Parallelism may change, the seeded order and the clips may not.
    assert ids_off == ids_on
    assert sorted(ids_off) == sorted(f"a{i}" for i in range(9))


def _ids(ds):
    return [[i.decode() for i in ids.numpy()] for _, _, ids in ds]


def _window_reference(order, clips, modalities, batch_size, window):
    """Numpy reference of `bucket_by`: each window of `window * batch_size`
    clips of the plain order, stably sorted by the longest of the
    modalities' lengths (cut to MAX_LENGTHS), cut into batches."""
    by_id = {clip.id: clip for clip in clips}
    windows = []
    size = window * batch_size
    for start in range(0, len(order), size):
        ids = order[start : start + size]
        key = [max(min(len(by_id[i].features[m]), MAX_LENGTHS[m]) for m in modalities)
               for i in ids]
        ids = [ids[j] for j in np.argsort(key, kind="stable")]
        windows.append([ids[j : j + batch_size] for j in range(0, len(ids), batch_size)])
    return windows


@pytest.mark.parametrize("modalities, window", [(["audio"], 3), (["audio", "vision"], 2)])
def test_bucket_by_sorts_each_window_by_length(tmp_path, modalities, window):
    clips = make_clips("a", 30, seed=5)
    write(tmp_path / "ds", {"train": clips})
    reordered = []
    # Three seeds: the record order also depends on TensorFlow's global seed
    # (set by earlier tests in the same process), so one seed's windows may
    # all come out in sorted order by chance (1 in 2^4 with window 2).
    for seed in (3, 4, 5):
        plain = data.load_dataset(
            tmp_path / "ds", "train", batch_size=4, seed=seed, with_ids=True
        )
        order = [i for batch in _ids(plain) for i in batch]
        bucketed = data.load_dataset(
            tmp_path / "ds", "train", batch_size=4, seed=seed, with_ids=True,
            bucket_by=modalities, bucket_window=window,
        )
        batches = _ids(bucketed)
        # The same count as plain batching, known to Keras; every clip once.
        assert int(bucketed.cardinality()) == int(plain.cardinality()) == len(batches) == 8
        assert sorted(i for batch in batches for i in batch) == sorted(order)
        # Window by window, the same batches as the reference, in some order.
        reference = _window_reference(order, clips, modalities, 4, window)
        start = 0
        for expected in reference:
            got = batches[start : start + len(expected)]
            assert sorted(got) == sorted(expected)
            reordered.append(got != expected)
            start += len(expected)
        assert start == len(batches)
    # ... not shortest first: a window's batches come in a shuffled order.
    assert any(reordered)
    # The batches' lengths are grouped: the spread inside a batch is below
    # that of plain batching.
    by_id = {clip.id: clip for clip in clips}

    def spread(groups):
        keys = [[max(min(len(by_id[i].features[m]), MAX_LENGTHS[m]) for m in modalities)
                 for i in group] for group in groups]
        return np.mean([max(k) - min(k) for k in keys])

    assert spread(batches) < spread(_ids(plain))
    # Each batch is parsed as plain batches are.
    for features, labels, ids in bucketed.take(2):
        reference_features, reference_labels = expected_batch(
            [by_id[i.decode()] for i in ids.numpy()])
        for key, value in reference_features.items():
            np.testing.assert_allclose(features[key].numpy(), value, rtol=1e-6)
        for key, value in reference_labels.items():
            np.testing.assert_array_equal(labels[key].numpy(), value)


def test_bucket_by_seeds_drop_remainder_and_repeat(tmp_path):
    write(tmp_path / "ds", {"train": make_clips("a", 30, seed=5)})

    def load(**kwargs):
        options = dict(batch_size=4, seed=3, with_ids=True, bucket_by="text", bucket_window=2)
        options.update(kwargs)
        return data.load_dataset(tmp_path / "ds", "train", **options)

    first = _ids(load())
    assert first == _ids(load())
    assert first != _ids(load(seed=4))
    # One batch is partial, in the last window (clips 16-29, 4 batches);
    # drop_remainder drops it.
    sizes = [len(b) for b in first]
    assert sorted(sizes) == [2] + [4] * 7 and 2 in sizes[-4:]
    dropped = load(drop_remainder=True)
    assert int(dropped.cardinality()) == 7
    # As with plain batching, the batch size is static, for strategies.
    assert dropped.element_spec[0]["audio"].shape[0] == 4
    assert [len(b) for b in _ids(dropped)] == [4] * 7
    # Windows run across the repeat: 60 clips in 15 batches.
    repeated = load(repeat=2)
    assert int(repeated.cardinality()) == 15
    assert [len(b) for b in _ids(repeated)] == [4] * 15
    # A new epoch of a cached set reshuffles before grouping.
    cached = load(cache=True)
    epochs = [_ids(cached) for _ in range(2)]
    assert epochs[0] != epochs[1]
    assert sorted(sum(epochs[0], [])) == sorted(sum(epochs[1], []))


def test_bucket_by_without_shuffle_and_the_default_window(tmp_path):
    clips = make_clips("a", 30, seed=5)
    write(tmp_path / "ds", {"test": clips})
    by_id = {clip.id: clip for clip in clips}
    ds = data.load_dataset(tmp_path / "ds", "test", batch_size=4, with_ids=True,
                           bucket_by="vision")
    batches = _ids(ds)
    assert batches == _ids(ds)
    # Tiny records: the default window (about 64 MB, at most 32 batches)
    # holds the whole split, and without shuffling its batches come
    # shortest first: the stored order, stably sorted by length.
    stored = [clip.id for clip in clips]
    assert batches == _window_reference(stored, clips, ["vision"], 4, 32)[0]
    keys = [min(len(by_id[i].features["vision"]), MAX_LENGTHS["vision"])
            for batch in batches for i in batch]
    assert keys == sorted(keys) and keys != [min(len(c.features["vision"]), 4) for c in clips]


def test_bad_bucket_arguments(tmp_path):
    write(tmp_path / "ds", {"train": make_clips("a", 2)})
    for bad, message in [
        ("face", r"bucket_by names unknown modality 'face'; data set .*ds has text, audio, vision"),
        (["audio", "face"], r"bucket_by names unknown modality 'face'"),
        ([], r"bucket_by must be a modality name or a non-empty list of them, got \[\]"),
        (3, r"bucket_by must be a modality name or a non-empty list of them, got 3"),
        ([1], r"bucket_by must be a modality name or a non-empty list of them, got \[1\]"),
    ]:
        with pytest.raises(ConfigError, match=rf"^load_dataset: {message}"):
            data.load_dataset(tmp_path / "ds", "train", bucket_by=bad)
    for bad in (0, -2, True, 2.0, "4"):
        with pytest.raises(ConfigError, match=rf"bucket_window must be a positive integer or None, got {bad!r}"):
            data.load_dataset(tmp_path / "ds", "train", bucket_by="audio", bucket_window=bad)
