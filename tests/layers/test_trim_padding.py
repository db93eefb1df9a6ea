"""TrimPadding: the cut to the longest clip, where it is made and where not,
and MulT's results with and without it."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mre.layers import TrimPadding
from keras_mre.layers import trim_padding
from keras_mre.models import build_model


def _padded(lengths, time, dim, seed=0):
    rng = np.random.default_rng(seed)
    frames = rng.normal(size=(len(lengths), time, dim)).astype("float32")
    for b, n in enumerate(lengths):
        frames[b, max(min(n, time), 0):] = 0.0
    return frames


def _reference(frames, lengths):
    """numpy: frames[:, :clip(max(lengths), 1, time)]."""
    keep = min(max(int(np.max(lengths, initial=1)), 1), frames.shape[1])
    return frames[:, :keep]


@pytest.mark.parametrize(
    "lengths,time",
    [
        ([5, 2, 3], 9),  # cut to 5
        ([9, 1], 9),  # a full clip: nothing to cut
        ([0, 0], 6),  # no valid frame anywhere: one step kept
        ([14, 3], 8),  # lengths past the time axis: the whole axis
        ([1], 4),
    ],
)
def test_eager_and_graph_cut_matches_numpy(lengths, time):
    frames = _padded(lengths, time, 3, seed=time)
    lengths = np.array(lengths, "int32")
    expected = _reference(frames, lengths)
    layer = TrimPadding()
    np.testing.assert_array_equal(np.asarray(layer(frames, lengths)), expected)

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, 3], tf.float32),
            tf.TensorSpec([None], tf.int32),
        ]
    )
    def graph(f, n):
        return layer(f, n)

    np.testing.assert_array_equal(graph(frames, lengths).numpy(), expected)


def test_one_trace_serves_every_length():
    layer = TrimPadding()
    traces = []

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 10, 2], tf.float32),
            tf.TensorSpec([None], tf.int32),
        ]
    )
    def graph(f, n):
        traces.append(1)
        return tf.shape(layer(f, n))[1]

    frames = _padded([10, 10], 10, 2)
    assert [int(graph(frames, np.array(n, "int32"))) for n in ([3, 2], [7, 1], [10, 4])] == [
        3, 7, 10
    ]
    assert len(traces) == 1


def test_xla_compiled_functions_get_the_whole_sequence():
    layer = TrimPadding()
    frames = _padded([4, 2], 8, 2, seed=1)
    lengths = np.array([4, 2], "int32")

    @tf.function(jit_compile=True)
    def compiled(f, n):
        return layer(f, n)

    out = compiled(frames, lengths).numpy()
    assert out.shape == (2, 8, 2)
    np.testing.assert_array_equal(out, frames)
    assert not trim_padding._xla_compiling()


def test_without_tensorflows_xla_check_nothing_is_cut(monkeypatch):
    from tensorflow.python.ops import control_flow_util

    monkeypatch.delattr(control_flow_util, "GraphOrParentsInXlaContext")
    frames = _padded([3, 1], 8, 2, seed=6)
    out = np.asarray(TrimPadding()(frames, np.array([3, 1], "int32")))
    np.testing.assert_array_equal(out, frames)


def test_output_shapes():
    layer = TrimPadding()
    assert tuple(layer.compute_output_shape((None, 500, 74), (None,))) == (None, None, 74)
    frames = keras.Input((500, 7))
    lengths = keras.Input((), dtype="int32")
    assert tuple(layer(frames, lengths).shape) == (None, None, 7)


def test_keras_file_round_trip(tmp_path):
    frames = keras.Input((None, 3))
    lengths = keras.Input((), dtype="int32")
    layer = TrimPadding(name="trim")
    model = keras.Model([frames, lengths], layer(frames, lengths))
    model.save(tmp_path / "trim.keras")
    loaded = keras.saving.load_model(tmp_path / "trim.keras")
    assert isinstance(loaded.get_layer("trim"), TrimPadding)
    assert loaded.get_layer("trim").get_config() == layer.get_config()
    assert TrimPadding.from_config(layer.get_config()).get_config() == layer.get_config()
    lens = np.array([3, 1], "int32")
    data = _padded(lens, 7, 3, seed=2)
    out = np.asarray(loaded([data, lens]))
    np.testing.assert_array_equal(out, _reference(data, lens))
    assert out.shape == (2, 3, 3)


def _identity(self, sequence, lengths):
    return sequence


def test_mult_gives_the_same_results_cut_and_whole(monkeypatch):
    """The cut removes padding only: MulT's outputs and gradients match the
    model run on the whole padded batch, and the cut is made inside it."""
    dims = {"text": 6, "audio": 5, "vision": 4}
    options = dict(feature_dims=dims, num_classes=3, model_dim=8, num_heads=2,
                   num_layers=2, memory_layers=1, dropout=0.0,
                   attention_dropout=0.0, seed=3)
    cut = build_model("mult", compile=False, **options)
    rng = np.random.default_rng(4)
    batch = {}
    for m, time in (("text", 9), ("audio", 30), ("vision", 25)):
        lengths = rng.integers(1, time - 6, size=4).astype("int32")
        batch[m] = _padded(lengths, time, dims[m], seed=time)
        batch[f"{m}_length"] = lengths
    widths = []
    original = TrimPadding.call

    def recording(self, sequence, lengths):
        out = original(self, sequence, lengths)
        widths.append(int(tf.shape(out)[1]))
        return out

    monkeypatch.setattr(TrimPadding, "call", recording)
    with tf.GradientTape() as tape:
        logits_cut = cut(batch, training=False)["logits"]
        loss = tf.reduce_sum(logits_cut ** 2)
    grads_cut = tape.gradient(loss, cut.trainable_variables)
    assert sorted(widths) == sorted(int(batch[f"{m}_length"].max()) for m in dims)

    monkeypatch.setattr(TrimPadding, "call", _identity)
    whole = build_model("mult", compile=False, **options)
    whole.set_weights(cut.get_weights())
    with tf.GradientTape() as tape:
        logits_whole = whole(batch, training=False)["logits"]
        loss = tf.reduce_sum(logits_whole ** 2)
    grads_whole = tape.gradient(loss, whole.trainable_variables)
    np.testing.assert_allclose(logits_cut.numpy(), logits_whole.numpy(), rtol=1e-4, atol=1e-5)
    for a, b in zip(grads_cut, grads_whole):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-3, atol=1e-5)


def test_exported_mult_serves_batches_of_any_longest_clip(tmp_path):
    """The SavedModel keeps the cut (a graph outside XLA) and answers as
    the Keras model does, for batches padded far past their longest clip.
    Frames past the longest clip are filled with garbage for the served
    call: only the cut keeps them out of the convolution at the longest
    clip's last frame."""
    from keras_mre import export

    dims = {"text": 6, "audio": 5, "vision": 4}
    model = build_model("mult", feature_dims=dims, num_classes=3, model_dim=8,
                        num_heads=2, num_layers=1, memory_layers=1, seed=5)
    version_dir = export.export_saved_model(model, str(tmp_path), name="mult",
                                            version=1, verbose=False)
    signature = tf.saved_model.load(version_dir).signatures["serving_default"]
    rng = np.random.default_rng(7)
    for longest in (3, 20):
        batch = {}
        for m, time in (("text", 20), ("audio", 30), ("vision", 25)):
            lengths = rng.integers(1, min(longest, time) + 1, size=3).astype("int32")
            batch[m] = _padded(lengths, time, dims[m], seed=longest + time)
            batch[f"{m}_length"] = lengths
        expected = model(batch, training=False)["emotion"].numpy()
        dirty = dict(batch)
        for m in dims:
            dirty[m] = batch[m].copy()
            dirty[m][:, int(batch[f"{m}_length"].max()):] = 50.0
        served = signature(**{k: tf.constant(v) for k, v in dirty.items()})
        np.testing.assert_allclose(served["probabilities"].numpy(), expected,
                                   rtol=1e-4, atol=1e-5)
