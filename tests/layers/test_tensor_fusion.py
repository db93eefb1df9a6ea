"""TensorFusion (TFN eq 1) against a numpy outer product."""

import keras
import numpy as np
import pytest

from keras_mre.layers import TensorFusion


def _reference(vectors):
    """TFN eq 1 with the constant first: [1; z_1] (x) ... (x) [1; z_M].

    Returned unflattened, `[batch, d_1 + 1, ..., d_M + 1]`, with the
    constant 1 at index 0 of every modality axis.
    """
    outputs = []
    for sample in zip(*vectors):
        tensor = np.ones(())
        for z in sample:
            extended = np.concatenate([[1.0], np.asarray(z, "float64")])
            tensor = np.multiply.outer(tensor, extended)
        outputs.append(tensor)
    return np.stack(outputs)


def _vectors(dims, batch, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(batch, d)).astype("float32") for d in dims]


CASES = [((3,), 2), ((2, 3), 1), ((2, 3), 4), ((4, 1), 3), ((2, 3, 2), 5), ((1, 1, 1), 2)]


@pytest.mark.parametrize("dims,batch", CASES)
def test_every_entry_is_the_product_of_extended_vectors(dims, batch):
    vectors = _vectors(dims, batch, seed=len(dims) * 10 + batch)
    out = np.asarray(TensorFusion()(vectors))
    assert out.shape == (batch, int(np.prod([d + 1 for d in dims])))
    # Flattened row-major: the layer's layout is the reference's.
    np.testing.assert_allclose(
        out, _reference(vectors).reshape(batch, -1), rtol=1e-5, atol=1e-6
    )


def test_contains_unimodal_and_bimodal_terms():
    a = np.array([[2.0, 3.0]], "float32")
    b = np.array([[5.0, 7.0]], "float32")
    out = np.asarray(TensorFusion()([a, b]))[0]
    # Every value of [1; a] (x) [1; b]: the 1, both vectors and all products.
    expected = [1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 14.0, 15.0, 21.0]
    np.testing.assert_allclose(np.sort(out), expected)


def test_last_modality_varies_fastest():
    a = np.array([[2.0]], "float32")
    b = np.array([[5.0]], "float32")
    c = np.array([[7.0]], "float32")
    out = np.asarray(TensorFusion()([a, b, c]))[0]
    # [1, c, b, bc, a, ac, ab, abc]: the constant first on every axis, the
    # last modality's index varying fastest.
    np.testing.assert_array_equal(out, [1.0, 7.0, 5.0, 35.0, 2.0, 14.0, 10.0, 70.0])


def test_tuple_input_equals_list_input():
    vectors = _vectors((2, 3), 3)
    layer = TensorFusion()
    np.testing.assert_array_equal(
        np.asarray(layer(tuple(vectors))), np.asarray(layer(vectors))
    )


@pytest.mark.parametrize(
    "shapes,expected",
    [
        ([(None, 2), (None, 3)], (None, 12)),
        ([(4, 2), (4, 3), (4, 1)], (4, 24)),
        ([(None, 5)], (None, 6)),
    ],
)
def test_compute_output_shape(shapes, expected):
    assert tuple(TensorFusion().compute_output_shape(shapes)) == expected


def test_symbolic_output_shape():
    inputs = [keras.Input((2,)), keras.Input((3,)), keras.Input((1,))]
    assert tuple(TensorFusion()(inputs).shape) == (None, 24)


def test_config_and_keras_file_round_trip(tmp_path):
    inputs = [keras.Input((2,)), keras.Input((3,)), keras.Input((2,))]
    layer = TensorFusion(name="fusion")
    model = keras.Model(inputs, layer(inputs))
    data = _vectors((2, 3, 2), 4, seed=7)
    model.save(tmp_path / "x.keras")
    loaded = keras.saving.load_model(tmp_path / "x.keras")
    loaded_layer = loaded.get_layer("fusion")
    assert isinstance(loaded_layer, TensorFusion)
    assert loaded_layer.get_config() == layer.get_config()
    assert TensorFusion.from_config(layer.get_config()).get_config() == layer.get_config()
    np.testing.assert_array_equal(
        loaded.predict(data, verbose=0), model.predict(data, verbose=0)
    )


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="non-empty list of"):
        TensorFusion()([])
    with pytest.raises(ValueError, match="non-empty list of"):
        TensorFusion()(np.zeros((2, 3), "float32"))
