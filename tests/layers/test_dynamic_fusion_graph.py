"""DynamicFusionGraph (Graph-MFN, Zadeh et al. ACL 2018) against numpy."""

import inspect
import math

import keras
import numpy as np
import pytest

from keras_mre.layers import DynamicFusionGraph


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _dense(x, layer, relu=False):
    y = x @ np.asarray(layer.kernel, "float64") + np.asarray(layer.bias, "float64")
    return np.maximum(y, 0.0) if relu else y


def graph_reference(layer, inputs):
    """The Dynamic Fusion Graph, vertex by vertex.

    Vertices are the non-empty modality subsets, smallest first and in
    lexicographic order within a size. The efficacies `alpha = sigmoid(
    D_alpha([v_1; ...; v_M]))` are consumed in the order the graph reads
    them: first the edges into each multimodal vertex `S` (from `S \\ {j}`,
    `j` ascending), then one edge per vertex into `T`. A multimodal vertex
    is `v_S = D_S([alpha v_{S\\{j}}]_j)`, the output `T = D_T([alpha v_S]_S)`.
    """
    inputs = [np.asarray(v, "float64") for v in inputs]
    count = len(inputs)
    masks = range(1, 2**count)
    subsets = sorted(
        (tuple(m for m in range(count) if mask >> m & 1) for mask in masks),
        key=lambda s: (len(s), s),
    )
    sublayers = {
        sub.name: sub for sub in layer.vertex_hidden + layer.vertex_out
    }
    alpha = _sigmoid(
        _dense(
            _dense(np.concatenate(inputs, -1), layer.efficacy_hidden, relu=True),
            layer.efficacy,
        )
    )
    columns = iter(range(alpha.shape[1]))
    vertex = {}
    for subset in subsets:
        if len(subset) == 1:
            vertex[subset] = inputs[subset[0]]
            continue
        children = [tuple(m for m in subset if m != j) for j in subset]
        joined = np.concatenate(
            [vertex[c] * alpha[:, [next(columns)]] for c in children], -1
        )
        tag = "_".join(map(str, subset))
        hidden = _dense(joined, sublayers[f"vertex_{tag}_hidden"], relu=True)
        vertex[subset] = _dense(hidden, sublayers[f"vertex_{tag}"], relu=True)
    read = np.concatenate([vertex[s] * alpha[:, [next(columns)]] for s in subsets], -1)
    assert next(columns, None) is None, "every efficacy is used exactly once"
    return _dense(_dense(read, layer.output_hidden, relu=True), layer.output_layer)


def _randomise(layer, seed):
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(0.5 * rng.normal(size=weight.shape).astype("float32"))


def _vectors(dims, seed=0, batch=3):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(batch, d)).astype("float32") for d in dims]


@pytest.mark.parametrize("dims", [(3,), (3, 2), (2, 4, 3), (2, 1, 3, 2)])
def test_matches_numpy_reference(dims):
    vectors = _vectors(dims)
    layer = DynamicFusionGraph(list(dims), hidden_dim=5, output_dim=4)
    layer.build([(None, d) for d in dims])
    _randomise(layer, seed=len(dims))
    out = keras.ops.convert_to_numpy(layer(vectors))
    assert out.shape == (3, 4)
    np.testing.assert_allclose(out, graph_reference(layer, vectors), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 6])
def test_vertex_and_edge_counts(count):
    layer = DynamicFusionGraph([2] * count, hidden_dim=3, output_dim=2)
    layer.build([(None, 2)] * count)
    vertices = 2**count - 1
    multimodal = vertices - count
    edges = sum(k * math.comb(count, k) for k in range(2, count + 1)) + vertices
    assert len(layer.vertex_hidden) == len(layer.vertex_out) == multimodal
    assert tuple(layer.efficacy_hidden.kernel.shape) == (2 * count, 3)
    assert tuple(layer.efficacy.kernel.shape) == (3, edges)
    assert tuple(layer.output_hidden.kernel.shape) == (2 * count + 3 * multimodal, 3)


def test_output_shape():
    layer = DynamicFusionGraph([4, 2, 3], hidden_dim=6, output_dim=5)
    inputs = [keras.Input((d,)) for d in (4, 2, 3)]
    assert tuple(layer(inputs).shape) == (None, 5)
    assert layer.compute_output_shape([(7, 4), (7, 2), (7, 3)]) == (7, 5)
    assert tuple(layer(_vectors((4, 2, 3), batch=7)).shape) == (7, 5)


def test_zero_efficacies_cut_every_input():
    vectors = _vectors((2, 3))
    layer = DynamicFusionGraph([2, 3], hidden_dim=4, output_dim=3)
    layer.build([(None, 2), (None, 3)])
    _randomise(layer, seed=5)
    layer.efficacy.bias.assign(np.full(layer.efficacy.bias.shape, -1e4, "float32"))
    out = keras.ops.convert_to_numpy(layer(vectors))
    constant = _dense(
        np.maximum(np.asarray(layer.output_hidden.bias), 0.0)[None], layer.output_layer
    )
    np.testing.assert_allclose(out, np.repeat(constant, 3, axis=0), atol=1e-6)


def test_config_and_keras_file_round_trip(tmp_path):
    dims = [3, 2, 4]
    inputs = [keras.Input((d,)) for d in dims]
    layer = DynamicFusionGraph(dims, hidden_dim=5, output_dim=6, name="graph")
    model = keras.Model(inputs, layer(inputs))
    _randomise(layer, seed=7)
    init_args = set(inspect.signature(DynamicFusionGraph.__init__).parameters)
    assert init_args - {"self", "kwargs"} <= set(layer.get_config())
    path = tmp_path / "x.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    data = _vectors(dims, seed=8, batch=4)
    np.testing.assert_array_equal(
        loaded.predict(data, verbose=0), model.predict(data, verbose=0)
    )
    assert loaded.get_layer("graph").get_config() == layer.get_config()
    assert (
        DynamicFusionGraph.from_config(layer.get_config()).get_config()
        == layer.get_config()
    )


@pytest.mark.parametrize("count", [0, 7])
def test_modality_count_out_of_range_raises(count):
    with pytest.raises(ValueError, match=f"supports 1 to 6 modalities, got {count}"):
        DynamicFusionGraph([2] * count, hidden_dim=3, output_dim=2)


def test_wrong_number_of_inputs_raises():
    layer = DynamicFusionGraph([2, 3], hidden_dim=3, output_dim=2)
    layer.build([(None, 2), (None, 3)])
    with pytest.raises(ValueError, match="got 3 inputs, expected 2"):
        layer(_vectors((2, 3, 3)))
