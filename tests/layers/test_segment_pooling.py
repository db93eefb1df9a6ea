"""SegmentPooling against a numpy loop over the documented segments."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mre.layers import SegmentPooling


def _reference(frames, lengths, num_steps):
    """Step s averages frames floor(s n / S) <= t < max(floor((s + 1) n / S), start + 1)."""
    batch, time, dim = frames.shape
    out = np.zeros((batch, num_steps, dim))
    for b in range(batch):
        n = min(max(int(lengths[b]), 0), time)
        if n == 0:
            continue
        for s in range(num_steps):
            start = (s * n) // num_steps
            end = max(((s + 1) * n) // num_steps, start + 1)
            out[b, s] = np.asarray(frames[b, start:end], "float64").mean(axis=0)
    return out


def _padded(lengths, time, dim, seed=0, garbage=0.0):
    rng = np.random.default_rng(seed)
    frames = rng.normal(size=(len(lengths), time, dim))
    for b, n in enumerate(lengths):
        frames[b, max(min(n, time), 0):] = garbage
    return frames.astype("float32")


@pytest.mark.parametrize(
    "lengths,time,num_steps",
    [
        ([7], 7, 7),
        ([10, 7, 3, 0], 10, 4),  # divisible, not divisible, shorter, empty
        ([9, 5, 1, 2, 0], 12, 3),
        ([13, 11, 6], 13, 5),
        ([4, 1, 3], 4, 9),  # every clip shorter than num_steps
        ([8, 0, 5], 8, 1),
        ([0, 0], 3, 2),
    ],
)
def test_matches_numpy_reference(lengths, time, num_steps):
    frames = _padded(lengths, time, 3, seed=sum(lengths) + num_steps)
    lengths = np.array(lengths, "int32")
    out = np.asarray(SegmentPooling(num_steps)(frames, lengths))
    assert out.shape == (len(lengths), num_steps, 3)
    np.testing.assert_allclose(
        out, _reference(frames, lengths, num_steps), rtol=1e-5, atol=1e-6
    )


def test_hand_computed_segments():
    frames = np.arange(6, dtype="float32").reshape(1, 6, 1)
    pool = SegmentPooling(2)
    # n = 5: frames {0, 1} and {2, 3, 4}; frame 5 is padding.
    np.testing.assert_allclose(np.asarray(pool(frames, np.array([5])))[0, :, 0], [0.5, 3.0])
    # n = 2 onto 4 steps: each frame repeated twice.
    np.testing.assert_allclose(
        np.asarray(SegmentPooling(4)(frames, np.array([2])))[0, :, 0], [0.0, 0.0, 1.0, 1.0]
    )
    # n = 6 onto 4 steps: {0}, {1, 2}, {3}, {4, 5}.
    np.testing.assert_allclose(
        np.asarray(SegmentPooling(4)(frames, np.array([6])))[0, :, 0], [0.0, 1.5, 3.0, 4.5]
    )


def test_empty_clip_pools_to_zeros():
    frames = _padded([0, 4], 4, 2, garbage=5.0)
    out = np.asarray(SegmentPooling(3)(frames, np.array([0, 4])))
    np.testing.assert_array_equal(out[0], 0.0)
    assert np.all(np.isfinite(out))


def test_single_step_is_masked_mean():
    lengths = [6, 2, 1]
    frames = _padded(lengths, 6, 4, seed=3, garbage=100.0)
    out = np.asarray(SegmentPooling(1)(frames, np.array(lengths)))
    for b, n in enumerate(lengths):
        np.testing.assert_allclose(out[b, 0], frames[b, :n].mean(0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("garbage", [1e4, -3.0, np.nan, np.inf])
def test_padded_frames_do_not_matter(garbage):
    lengths = np.array([9, 4, 2, 0], "int32")
    clean = _padded(lengths, 9, 3, seed=5)
    dirty = _padded(lengths, 9, 3, seed=5, garbage=garbage)
    pool = SegmentPooling(4)
    np.testing.assert_array_equal(
        np.asarray(pool(dirty, lengths)), np.asarray(pool(clean, lengths))
    )
    np.testing.assert_allclose(
        np.asarray(pool(dirty, lengths)), _reference(clean, lengths, 4), rtol=1e-5, atol=1e-6
    )


def test_padded_frames_get_no_gradient():
    lengths = np.array([5, 2], "int32")
    frames = tf.Variable(_padded(lengths, 5, 2, seed=8, garbage=3.0))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(SegmentPooling(3)(frames, lengths) ** 2)
    grad = tape.gradient(loss, frames).numpy()
    np.testing.assert_array_equal(grad[1, 2:], 0.0)
    assert np.all(grad[0] != 0.0) and np.all(grad[1, :2] != 0.0)


def test_lengths_are_clipped_to_time():
    frames = _padded([5, 5], 5, 2, seed=4)
    out = np.asarray(SegmentPooling(3)(frames, np.array([12, -2])))
    np.testing.assert_allclose(
        out, _reference(frames, np.array([5, 0]), 3), rtol=1e-5, atol=1e-6
    )


def test_float_lengths_are_accepted():
    frames = _padded([6, 3], 6, 2, seed=9)
    np.testing.assert_array_equal(
        np.asarray(SegmentPooling(2)(frames, np.array([6.0, 3.0], "float32"))),
        np.asarray(SegmentPooling(2)(frames, np.array([6, 3], "int32"))),
    )


def test_output_shapes():
    pool = SegmentPooling(6)
    assert tuple(pool.compute_output_shape((None, None, 7), (None,))) == (None, 6, 7)
    assert tuple(pool.compute_output_shape((3, 20, 2))) == (3, 6, 2)
    frames = keras.Input((None, 7))
    lengths = keras.Input((), dtype="int32")
    assert tuple(pool(frames, lengths).shape) == (None, 6, 7)


def test_config_and_keras_file_round_trip(tmp_path):
    frames = keras.Input((None, 3))
    lengths = keras.Input((), dtype="int32")
    layer = SegmentPooling(4, name="pool")
    model = keras.Model([frames, lengths], layer(frames, lengths))
    model.save(tmp_path / "x.keras")
    loaded = keras.saving.load_model(tmp_path / "x.keras")
    loaded_layer = loaded.get_layer("pool")
    assert isinstance(loaded_layer, SegmentPooling)
    assert loaded_layer.num_steps == 4
    assert loaded_layer.get_config() == layer.get_config()
    assert SegmentPooling.from_config(layer.get_config()).get_config() == layer.get_config()
    for time in (3, 11):
        lens = np.array([time, 2, 0], "int32")
        data = [_padded(lens, time, 3, seed=time), lens]
        expected = model.predict(data, verbose=0)
        np.testing.assert_array_equal(loaded.predict(data, verbose=0), expected)
        np.testing.assert_allclose(expected, _reference(data[0], lens, 4), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("num_steps", [0, -3, 2.5, "3", True])
def test_bad_num_steps_raises(num_steps):
    with pytest.raises(
        ValueError, match=re.escape(f"num_steps must be an integer >= 1, got {num_steps!r}")
    ):
        SegmentPooling(num_steps)


def test_numpy_integer_num_steps_is_accepted():
    assert SegmentPooling(np.int64(3)).get_config()["num_steps"] == 3
