"""FusedAdam: Adam's numbers, with TensorFlow's fused kernel where it applies.

Under a 2-replica MirroredStrategy: `tests/models/test_mirrored.py`.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras

from keras_mre.optimizers import FusedAdam


def numpy_adam(w, grads, lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Adam, Kingma & Ba (2015) Algorithm 1 in the "epsilon hat" form."""
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        w = w - lr * np.sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (np.sqrt(v) + epsilon)
    return w


def run(optimizer, grads, start, compiled=True):
    """Applies `grads` (a list of per-step lists) to variables from `start`;
    returns the final values and the op types of the traced step."""
    variables = [keras.Variable(w) for w in start]
    optimizer.build(variables)

    def step(gs):
        optimizer.apply(list(gs), variables)

    fn = tf.function(step) if compiled else step
    for gs in grads:
        fn([tf.constant(g) for g in gs])
    op_types = set()
    if compiled:
        graph = fn.get_concrete_function([tf.TensorSpec(w.shape) for w in start]).graph
        graph_def = graph.as_graph_def()
        op_types = {node.op for node in graph_def.node}
        for function in graph_def.library.function:  # e.g. the branches of a cond
            op_types |= {node.op for node in function.node_def}
    return [np.asarray(v) for v in variables], op_types


def problem(seed=0, steps=6):
    rng = np.random.default_rng(seed)
    start = [rng.normal(size=(5, 3)).astype("float32"), rng.normal(size=(3,)).astype("float32")]
    grads = [[rng.normal(size=w.shape).astype("float32") for w in start] for _ in range(steps)]
    return start, grads


def test_matches_numpy_adam_and_keras_adam_with_the_fused_kernel():
    start, grads = problem()
    fused, op_types = run(FusedAdam(0.05, beta_1=0.8, beta_2=0.95, epsilon=1e-6), grads, start)
    assert "ResourceApplyAdam" in op_types
    reference, keras_ops = run(keras.optimizers.Adam(0.05, beta_1=0.8, beta_2=0.95, epsilon=1e-6), grads, start)
    assert "ResourceApplyAdam" not in keras_ops
    for i, w in enumerate(start):
        want = numpy_adam(w.astype("float64"), [g[i].astype("float64") for g in grads],
                          0.05, 0.8, 0.95, 1e-6)
        np.testing.assert_allclose(fused[i], want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(fused[i], reference[i], rtol=1e-5, atol=1e-6)
    # The check can fail: fewer steps give other values.
    short, _ = run(FusedAdam(0.05, beta_1=0.8, beta_2=0.95, epsilon=1e-6), grads[:-1], start)
    assert not np.allclose(short[0], fused[0])


def test_eager_apply_matches():
    start, grads = problem(seed=1)
    fused, _ = run(FusedAdam(0.01), grads, start, compiled=False)
    reference, _ = run(keras.optimizers.Adam(0.01), grads, start, compiled=False)
    for a, b in zip(fused, reference):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("options", [
    {"clipnorm": 0.5},
    {"weight_decay": 0.1},
    {"amsgrad": True},
    {"gradient_accumulation_steps": 2},
])
def test_base_optimizer_features_behave_as_in_adam(options):
    start, grads = problem(seed=2)
    fused, op_types = run(FusedAdam(0.02, **options), grads, start)
    reference, _ = run(keras.optimizers.Adam(0.02, **options), grads, start)
    for a, b in zip(fused, reference):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert ("ResourceApplyAdam" in op_types) == (not options.get("amsgrad", False))


def test_config_and_keras_round_trip(tmp_path):
    optimizer = FusedAdam(0.004, beta_1=0.7, amsgrad=True, clipnorm=1.0)
    config = optimizer.get_config()
    assert config == {**keras.optimizers.Adam(0.004, beta_1=0.7, amsgrad=True, clipnorm=1.0).get_config(),
                      "name": config["name"]}
    again = FusedAdam.from_config(config)
    assert again.get_config() == config
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is FusedAdam and restored.get_config() == config

    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.ones((4, 3)), np.zeros((4, 2)), verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is FusedAdam
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
