import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mre.errors import ConfigError
from keras_mre.layers import LSTMEncoder


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_reference(layer, frames, lengths):
    kernel = np.asarray(layer.kernel, "float64")
    recurrent = np.asarray(layer.cell.recurrent_kernel, "float64")
    bias = np.asarray(layer.bias, "float64")
    u = layer.units
    out = np.zeros((frames.shape[0], u))
    for b in range(frames.shape[0]):
        h = np.zeros(u)
        c = np.zeros(u)
        for t in range(lengths[b]):
            z = frames[b, t] @ kernel + bias + h @ recurrent
            i, f, o, g = z[:u], z[u : 2 * u], z[2 * u : 3 * u], z[3 * u :]
            c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
            h = sigmoid(o) * np.tanh(c)
        out[b] = h
    return out


def make_inputs(seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.normal(size=(4, 6, 5)).astype("float32")
    lengths = np.array([6, 2, 0, 4], dtype="int32")
    frames[np.arange(6)[None, :] >= lengths[:, None]] = 0.0
    return frames, lengths


def test_matches_numpy_reference():
    layer = LSTMEncoder(3)
    frames, lengths = make_inputs()
    out = np.asarray(layer(frames, lengths))
    assert out.shape == (4, 3)
    np.testing.assert_array_equal(np.asarray(layer.bias)[3:6], 1.0)
    np.testing.assert_allclose(out, numpy_reference(layer, frames, lengths), atol=1e-5)


def test_matches_keras_lstm_on_full_length_clips():
    layer = LSTMEncoder(3)
    frames, _ = make_inputs()
    ours = np.asarray(layer(frames))
    reference = keras.layers.LSTM(3)
    reference.build(frames.shape)

    def keras_order(w):  # ours: i, f, o, g; Keras: i, f, g, o
        i, f, o, g = np.split(np.asarray(w), 4, axis=-1)
        return np.concatenate([i, f, g, o], axis=-1)

    reference.set_weights(
        [
            keras_order(layer.kernel),
            keras_order(layer.cell.recurrent_kernel),
            keras_order(layer.bias),
        ]
    )
    np.testing.assert_allclose(ours, np.asarray(reference(frames)), atol=1e-5)


def test_padding_changes_nothing_and_empty_clip_is_zero():
    layer = LSTMEncoder(3)
    frames, lengths = make_inputs()
    rng = np.random.default_rng(2)
    padded = np.concatenate([frames, rng.normal(size=(4, 5, 5))], axis=1).astype("float32")
    invalid = np.arange(6)[None, :] >= lengths[:, None]
    padded[:, :6][invalid] = rng.normal(size=frames.shape)[invalid]
    a = np.asarray(layer(frames, lengths))
    b = np.asarray(layer(padded, lengths))
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.isfinite(b).all()
    np.testing.assert_array_equal(b[2], np.zeros(3))


def test_time_axis_of_zero_steps_gives_zeros():
    layer = LSTMEncoder(3)
    out = np.asarray(layer(np.zeros((2, 0, 5), "float32"), np.zeros(2, "int32")))
    np.testing.assert_array_equal(out, np.zeros((2, 3)))
    fn = tf.function(
        layer,
        input_signature=[
            tf.TensorSpec((None, None, 5), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        ],
    )
    np.testing.assert_array_equal(
        np.asarray(fn(np.zeros((2, 0, 5), "float32"), np.zeros(2, "int32"))), 0.0
    )


def test_every_weight_gets_gradient():
    layer = LSTMEncoder(3)
    frames, lengths = make_inputs()
    layer(frames, lengths)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(frames, lengths) ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    assert len(grads) == 3
    for weight, grad in zip(layer.trainable_weights, grads):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, weight.path


def test_graph_mode_with_unknown_time_dimension():
    layer = LSTMEncoder(3)
    frames, lengths = make_inputs()
    fn = tf.function(
        layer,
        input_signature=[
            tf.TensorSpec((None, None, 5), tf.float32),
            tf.TensorSpec((None,), tf.int32),
        ],
    )
    np.testing.assert_allclose(
        np.asarray(fn(frames, lengths)), np.asarray(layer(frames, lengths)), atol=1e-6
    )


def test_config_and_keras_file_round_trip(tmp_path):
    layer = LSTMEncoder(3, dropout=0.25)
    clone = LSTMEncoder.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    frames_in = keras.Input((None, 5))
    lengths_in = keras.Input((), dtype="int32")
    model = keras.Model([frames_in, lengths_in], LSTMEncoder(3)(frames_in, lengths_in))
    frames, lengths = make_inputs()
    model.save(tmp_path / "lstm.keras")
    loaded = keras.saving.load_model(tmp_path / "lstm.keras")
    np.testing.assert_array_equal(
        loaded.predict([frames, lengths], verbose=0),
        model.predict([frames, lengths], verbose=0),
    )


def test_bad_units_raise():
    with pytest.raises(ConfigError, match="units=-2"):
        LSTMEncoder(-2)
