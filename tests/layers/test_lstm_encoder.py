import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_mre.errors import ConfigError
from keras_mre.layers import LSTMEncoder


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def rounded(values, dtype):
    """`values` rounded to `dtype` (a numpy or ml_dtypes name), as float64."""
    import ml_dtypes

    target = getattr(ml_dtypes, dtype) if dtype == "bfloat16" else np.dtype(dtype)
    return np.asarray(values, "float32").astype(target).astype("float64")


def numpy_reference(layer, frames, lengths, projection_dtype=None):
    """The encoder in float64; with `projection_dtype`, the features and `W`
    are rounded to it for `x_t W`, and so is the product."""
    kernel = np.asarray(layer.kernel, "float64")
    recurrent = np.asarray(layer.cell.recurrent_kernel, "float64")
    bias = np.asarray(layer.bias, "float64")
    u = layer.units
    out = np.zeros((frames.shape[0], u))
    for b in range(frames.shape[0]):
        h = np.zeros(u)
        c = np.zeros(u)
        for t in range(lengths[b]):
            if projection_dtype is None:
                projected = frames[b, t] @ kernel
            else:
                projected = rounded(
                    rounded(frames[b, t], projection_dtype)
                    @ rounded(kernel, projection_dtype),
                    projection_dtype,
                )
            z = projected + bias + h @ recurrent
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


@pytest.mark.parametrize(
    "kwargs", [{"dropout": 0.25}, {"projection_dtype": "bfloat16"}], ids=["dropout", "bfloat16"]
)
def test_config_and_keras_file_round_trip(tmp_path, kwargs):
    layer = LSTMEncoder(3, **kwargs)
    clone = LSTMEncoder.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    for name, value in kwargs.items():
        assert clone.get_config()[name] == value
    frames_in = keras.Input((None, 5))
    lengths_in = keras.Input((), dtype="int32")
    model = keras.Model([frames_in, lengths_in], LSTMEncoder(3, **kwargs)(frames_in, lengths_in))
    frames, lengths = make_inputs()
    model.save(tmp_path / "lstm.keras")
    loaded = keras.saving.load_model(tmp_path / "lstm.keras")
    assert loaded.layers[-1].projection_dtype == kwargs.get("projection_dtype")
    np.testing.assert_array_equal(
        loaded.predict([frames, lengths], verbose=0),
        model.predict([frames, lengths], verbose=0),
    )


def test_bad_units_raise():
    with pytest.raises(ConfigError, match="units=-2"):
        LSTMEncoder(-2)


@pytest.mark.parametrize("implementation", ["generic", "xla"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_projection_matches_numpy_reference(implementation, dtype):
    frames, lengths = make_inputs()
    layer = LSTMEncoder(3, implementation=implementation, projection_dtype=dtype)
    layer.build(frames.shape)
    reference = LSTMEncoder(3, implementation=implementation)
    reference.build(frames.shape)
    reference.set_weights(layer.get_weights())
    out, *grads = values_and_gradients(layer, frames, lengths, training=True)
    _, *grads_full = values_and_gradients(reference, frames, lengths, training=True)
    assert out.dtype == "float32" and layer.kernel.dtype == "float32"
    low = np.abs(np.asarray(out) - numpy_reference(layer, frames, lengths, dtype))
    full = np.abs(np.asarray(out) - numpy_reference(layer, frames, lengths))
    # Matches the rounded product closely, and the float32 one only to the
    # rounding: the option does change the product.
    assert low.max() < 1e-4, low.max()
    assert full.max() > 10 * low.max() and full.max() < 2e-2, full.max()
    # The gradients (features, kernel, bias, recurrent kernel) reach the
    # float32 variables, close to the float32 layer's.
    for name, got, want in zip(["frames", "kernel", "bias", "recurrent"], grads, grads_full):
        assert got.dtype == "float32", name
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=3e-2, err_msg=name)
        assert float(tf.reduce_max(tf.abs(got))) > 0, name


def test_bad_projection_dtype_raises():
    with pytest.raises(ConfigError, match="projection_dtype='int8': expected one of"):
        LSTMEncoder(3, projection_dtype="int8")


@pytest.mark.parametrize(
    "cpuinfo,expected",
    [
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n", False),
        ("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n", True),
        ("processor\t: 0\nflags\t\t: fpu amx_bf16 amx_tile\n", True),
        ("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n", True),  # Arm
        ("processor\t: 0\n", None),  # no flags listed
        (None, None),  # no /proc/cpuinfo
    ],
)
def test_bfloat16_projection_warns_on_a_cpu_without_bfloat16(
    cpuinfo, expected, tmp_path, monkeypatch
):
    import warnings

    from keras_mre import _cpu

    path = tmp_path / "cpuinfo"
    if cpuinfo is not None:
        path.write_text(cpuinfo)
    monkeypatch.setattr(_cpu, "_CPUINFO", str(path))
    _cpu.has_bfloat16_instructions.cache_clear()
    try:
        assert _cpu.has_bfloat16_instructions() is expected
        if expected is False:
            with pytest.warns(UserWarning, match="this CPU has no bfloat16 instructions"):
                LSTMEncoder(3, projection_dtype="bfloat16")
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            LSTMEncoder(3, projection_dtype="float16")
            LSTMEncoder(3)
            if expected is not False:
                LSTMEncoder(3, projection_dtype="bfloat16")
    finally:
        _cpu.has_bfloat16_instructions.cache_clear()


def test_bad_implementation_raises():
    with pytest.raises(ConfigError, match="implementation='cudnn'.*auto"):
        LSTMEncoder(3, implementation="cudnn")


def twin_layers(frames, **kwargs):
    """Generic and XLA encoders with the same weights."""
    generic = LSTMEncoder(3, implementation="generic", **kwargs)
    xla = LSTMEncoder(3, implementation="xla", **kwargs)
    generic.build(frames.shape)
    xla.build(frames.shape)
    xla.set_weights(generic.get_weights())
    return generic, xla


def values_and_gradients(layer, frames, lengths, training):
    frames = tf.convert_to_tensor(frames)
    with tf.GradientTape() as tape:
        tape.watch(frames)
        out = layer(frames, lengths, training=training)
        # A non-uniform upstream gradient, so every output unit matters.
        loss = tf.reduce_sum(out * tf.range(1.0, 4.0)) + tf.reduce_sum(out**2)
    grads = tape.gradient(loss, [frames] + layer.trainable_weights)
    return [out] + grads


@pytest.mark.parametrize(
    "lengths",
    [[6, 2, 0, 4], [3, 1, 0, 2], [0, 0, 0, 0], [9, 6, 6, 6]],
    ids=["mixed", "shorter-than-time-axis", "all-empty", "over-long"],
)
def test_xla_kernel_matches_generic_values_and_gradients(lengths):
    frames, _ = make_inputs()
    lengths = np.array(lengths, "int32")
    generic, xla = twin_layers(frames)
    expected = values_and_gradients(generic, frames, lengths, training=True)
    got = values_and_gradients(xla, frames, lengths, training=True)
    assert len(got) == 5  # output; gradients of frames, kernel, bias, recurrent kernel
    for name, e, g in zip(["output", "frames", "kernel", "bias", "recurrent"], expected, got):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=1e-5, err_msg=name)
    clipped = np.minimum(lengths, frames.shape[1])
    np.testing.assert_allclose(
        np.asarray(got[0]), numpy_reference(generic, frames, clipped), atol=1e-5
    )
    if lengths.max() > 0:
        # the kernel and the gradients are not trivially zero
        assert float(tf.reduce_max(tf.abs(got[4]))) > 0


@pytest.mark.parametrize(
    "groups,shards", [(1, 1), (2, 1), (8, 1), (2, 2), (1, 3), (8, 4)]
)
@pytest.mark.parametrize("trace", ["eager", "unknown-batch"])
def test_xla_kernel_packs_a_large_batch_exactly(trace, groups, shards, monkeypatch):
    # 37 clips in `shards` shards (3: 13 rows each, 4: 10 each, the batch
    # padded with 2 and 3 empty clips) of `groups` phases (8 phases of one
    # 37-row shard: 37, 33, 28, 24, 19, 15, 10 and 6 rows), with tied, empty
    # and full-length clips in an unsorted order; the kernel sorts nothing
    # itself, so the encoder's sort, sharding and unsort are checked too.
    # "unknown-batch" traces the step with a None batch dimension, as Keras'
    # relaxed retracing does, where the row counts are only known to XLA.
    import functools

    from keras_mre.layers import _lstm_xla_kernel

    monkeypatch.setattr(_lstm_xla_kernel, "lstm_last_state", functools.partial(
        _lstm_xla_kernel.lstm_last_state, groups=groups))
    monkeypatch.setattr(_lstm_xla_kernel, "shards_for", lambda batch: shards)
    rng = np.random.default_rng(5)
    frames = rng.normal(size=(37, 9, 5)).astype("float32")
    lengths = rng.integers(0, 10, size=37).astype("int32")
    lengths[[3, 20]] = 0
    lengths[[4, 11, 30]] = 9
    lengths[[7, 8]] = 5
    generic, xla = twin_layers(frames)
    expected = values_and_gradients(generic, frames, lengths, training=True)
    if trace == "eager":
        got = values_and_gradients(xla, frames, lengths, training=True)
    else:
        run = tf.function(
            lambda f, n: values_and_gradients(xla, f, n, training=True),
            input_signature=[
                tf.TensorSpec((None, 9, 5), tf.float32),
                tf.TensorSpec((None,), tf.int32),
            ],
        )
        got = run(frames, lengths)
    for name, e, g in zip(["output", "frames", "kernel", "bias", "recurrent"], expected, got):
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), atol=1e-5, err_msg=name)
    np.testing.assert_allclose(
        np.asarray(got[0]), numpy_reference(generic, frames, lengths), atol=1e-5
    )
    assert np.all(np.asarray(got[0])[[3, 20]] == 0)
    assert np.all(np.abs(np.asarray(got[0])[lengths > 0]).sum(axis=1) > 0)


def test_xla_kernel_gradient_matches_finite_differences():
    frames, lengths = make_inputs(seed=3)
    layer = LSTMEncoder(3, implementation="xla")
    layer.build(frames.shape)
    recurrent = layer.cell.recurrent_kernel
    grad = values_and_gradients(layer, frames, lengths, training=True)[4]

    def loss_at(value):
        recurrent.assign(value)
        out = np.asarray(layer(frames, lengths, training=True), "float64")
        return float((out * np.arange(1.0, 4.0)).sum() + (out**2).sum())

    base = np.asarray(recurrent).copy()
    eps = 1e-2
    for index in [(0, 0), (1, 4), (2, 7), (0, 11)]:  # one entry per gate
        plus, minus = base.copy(), base.copy()
        plus[index] += eps
        minus[index] -= eps
        numeric = (loss_at(plus) - loss_at(minus)) / (2 * eps)
        np.testing.assert_allclose(float(grad[index]), numeric, rtol=2e-2, atol=1e-4)
    recurrent.assign(base)


@pytest.mark.parametrize(
    "gpu,inter_op,cpus,batch,expected",
    [
        (False, 0, 2, 32, 2),  # default threads: one shard per usable CPU
        (False, 0, 16, 64, 4),  # at most MAX_SHARDS
        (False, 0, 16, 20, 2),  # at least MIN_ROWS clips per shard
        (False, 0, 16, 7, 1),
        (False, 0, 16, None, 4),  # batch unknown to the trace
        (False, 3, 16, 64, 3),  # TensorFlow's inter-op setting wins
        (False, 1, 16, 64, 1),
        (True, 0, 16, 64, 1),  # a GPU runs the whole batch in one loop
    ],
)
def test_shards_for_follows_threads_batch_and_device(
    gpu, inter_op, cpus, batch, expected, monkeypatch
):
    from keras_mre.layers import _lstm_xla_kernel

    monkeypatch.setattr(_lstm_xla_kernel, "_gpu_visible", lambda: gpu)
    monkeypatch.setattr(
        tf.config.threading, "get_inter_op_parallelism_threads", lambda: inter_op
    )
    monkeypatch.setattr(_lstm_xla_kernel.os, "sched_getaffinity", lambda pid: range(cpus))
    assert _lstm_xla_kernel.shards_for(batch) == expected


def test_xla_shards_run_as_independent_compiled_loops(monkeypatch):
    # The concurrency comes from graph execution: every shard must be its
    # own call of the compiled forward (and backward) function, none
    # feeding another.
    from keras_mre.layers import _lstm_xla_kernel

    monkeypatch.setattr(_lstm_xla_kernel, "shards_for", lambda batch: 3)
    layer = LSTMEncoder(3, implementation="xla")
    frames, lengths = make_inputs()
    layer.build(frames.shape)

    @tf.function
    def step(frames, lengths):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(frames, lengths, training=True) ** 2)
        return tape.gradient(loss, layer.trainable_weights)

    graph = step.get_concrete_function(
        tf.TensorSpec(frames.shape, tf.float32), tf.TensorSpec(lengths.shape, tf.int32)
    ).graph
    compiled = collections.defaultdict(list)  # XLA function -> its calls
    for op in graph.get_operations():
        if "_XlaMustCompile" in op.node_def.attr and op.get_attr("_XlaMustCompile"):
            compiled[op.get_attr("f").name].append(op)
    assert sorted(len(calls) for calls in compiled.values()) == [3, 3]  # forward, backward

    def upstream(op):
        seen, stack = set(), [op]
        while stack:
            for tensor in stack.pop().inputs:
                if tensor.op not in seen:
                    seen.add(tensor.op)
                    stack.append(tensor.op)
        return seen

    for calls in compiled.values():
        for call in calls:
            assert not upstream(call) & set(calls), f"{call.name} waits for another shard"


def test_auto_uses_xla_only_in_training(monkeypatch):
    from keras_mre.layers import _lstm_xla_kernel

    calls = []
    real = _lstm_xla_kernel.lstm_last_state

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(_lstm_xla_kernel, "lstm_last_state", spy)
    frames, lengths = make_inputs()
    layer = LSTMEncoder(3)
    inference = np.asarray(layer(frames, lengths))
    assert calls == []
    training = np.asarray(layer(frames, lengths, training=True))
    assert calls == [1]
    np.testing.assert_allclose(training, inference, atol=1e-5)


def test_xla_time_axis_of_zero_steps_gives_zeros():
    layer = LSTMEncoder(3, implementation="xla")
    out = layer(np.zeros((2, 0, 5), "float32"), np.zeros(2, "int32"), training=True)
    np.testing.assert_array_equal(np.asarray(out), np.zeros((2, 3)))


def test_xla_kernel_trains_inside_fit():
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(64, 7, 5)).astype("float32")
    lengths = rng.integers(1, 8, size=64).astype("int32")
    target = (frames[np.arange(64), lengths - 1, 0] > 0).astype("int32")
    frames_in = keras.Input((7, 5))
    lengths_in = keras.Input((), dtype="int32")
    state = LSTMEncoder(8, implementation="xla")(frames_in, lengths_in)
    model = keras.Model([frames_in, lengths_in], keras.layers.Dense(2)(state))
    model.compile(
        keras.optimizers.Adam(0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit([frames, lengths], target, batch_size=16, epochs=15, verbose=0)
    assert history.history["accuracy"][-1] > 0.9


def test_xla_output_keeps_its_static_shape_after_relaxed_retracing():
    # After a few input shapes the compiled functions are retraced with
    # unknown dimensions (widths included); the layer's output must still
    # be [batch, units] for the layers built on it (this once broke
    # LowRankFusion inside fit).
    for units, steps in ((3, 4), (4, 5), (5, 6), (6, 7), (7, 3)):
        layer = LSTMEncoder(units, implementation="xla")

        @tf.function(
            input_signature=[
                tf.TensorSpec((None, steps, 5), tf.float32),
                tf.TensorSpec((None,), tf.int32),
            ]
        )
        def run(frames, lengths):
            out = layer(frames, lengths, training=True)
            assert out.shape[-1] == units, (units, out.shape)
            return out

        run(np.zeros((2, steps, 5), "float32"), np.array([1, steps], "int32"))
