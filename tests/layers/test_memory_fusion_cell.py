"""MemoryFusionCell (MFN eq 1-5, Graph-MFN) against a numpy reference."""

import inspect

import keras
import numpy as np
import pytest

from keras_mre.layers import MemoryFusionCell

DIMS = (3, 2, 4)
LSTM, MEMORY, ATTENTION, GATE, GRAPH = 4, 5, 6, 7, 6
BATCH = 3


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np(weight):
    return np.asarray(weight, "float64")


def _dense(x, layer, relu=False):
    y = x @ _np(layer.kernel) + _np(layer.bias)
    return np.maximum(y, 0.0) if relu else y


def lstm_reference(lstm, x, h, c):
    """One LSTM step; Keras packs the gates as [input, forget, candidate, output]."""
    z = x @ _np(lstm.kernel) + h @ _np(lstm.recurrent_kernel) + _np(lstm.bias)
    i, f, g, o = np.split(z, 4, axis=-1)
    c_new = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h_new = _sigmoid(o) * np.tanh(c_new)
    return h_new, c_new


def _graph(graph, inputs):
    as_float32 = [keras.ops.convert_to_tensor(v.astype("float32")) for v in inputs]
    return keras.ops.convert_to_numpy(graph(as_float32)).astype("float64")


def cell_reference(cell, x, states, keep=None):
    """One MFN step.

    System of LSTMs, then the Delta-memory attention `c^ = c* softmax(D_a(c*))`
    over `c* = [c_{t-1}; c_t]` (eq 1-2), optionally the fusion graph over
    `[c^_{m, t-1}; c^_{m, t}]` per modality, then the gated memory
    `u_t = sigmoid(D_g1) u_{t-1} + sigmoid(D_g2) tanh(D_u)` (eq 3-5). `keep`
    `[batch, 3 * gate_dim]` scales the hidden units of D_u, D_g1, D_g2.
    """
    x = np.asarray(x, "float64")
    states = [np.asarray(s, "float64") for s in states]
    count, width = len(cell.modality_dims), cell.lstm_dim
    bounds = np.cumsum([0] + list(cell.modality_dims))
    hs, old, new, new_states = [], [], [], []
    for m in range(count):
        h, c = lstm_reference(
            cell.lstms[m], x[:, bounds[m] : bounds[m + 1]], states[2 * m],
            states[2 * m + 1],
        )
        hs.append(h)
        old.append(states[2 * m + 1])
        new.append(c)
        new_states += [h, c]
    star = np.concatenate(old + new, -1)
    attention = _softmax(
        _dense(_dense(star, cell.attention_hidden, relu=True), cell.attention_out)
    )
    fused = star * attention
    if cell.use_graph:
        # The graph itself is checked against numpy in
        # test_dynamic_fusion_graph.py; here, what the cell feeds it.
        previous, current = fused[:, : count * width], fused[:, count * width :]
        fused = _graph(
            cell.graph,
            [
                np.concatenate(
                    [previous[:, m * width : (m + 1) * width],
                     current[:, m * width : (m + 1) * width]],
                    -1,
                )
                for m in range(count)
            ],
        )
    gate = cell.gate_dim
    outputs = {}
    for index, name in enumerate(("update", "retain", "write")):
        hidden_layer, out_layer = cell.gate_hidden[index], cell.gate_out[index]
        assert out_layer.name == name
        hidden = _dense(fused, hidden_layer, relu=True)
        if keep is not None:
            hidden = hidden * keep[:, index * gate : (index + 1) * gate]
        outputs[name] = _dense(hidden, out_layer)
    memory = _sigmoid(outputs["retain"]) * states[-1] + _sigmoid(
        outputs["write"]
    ) * np.tanh(outputs["update"])
    new_states.append(memory)
    return np.concatenate(hs + [memory], -1), new_states


def _cell(use_graph=False, external_dropout=False, seed=0, dropout=0.0):
    cell = MemoryFusionCell(
        list(DIMS),
        lstm_dim=LSTM,
        memory_dim=MEMORY,
        attention_dim=ATTENTION,
        gate_dim=GATE,
        dropout=dropout,
        use_graph=use_graph,
        graph_dim=GRAPH,
        external_dropout=external_dropout,
    )
    cell.build((None, sum(DIMS) + (3 * GATE if external_dropout else 0)))
    rng = np.random.default_rng(seed)
    for weight in cell.weights:
        weight.assign(0.5 * rng.normal(size=weight.shape).astype("float32"))
    return cell


def _step_data(seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(BATCH, sum(DIMS))).astype("float32")
    states = [rng.normal(size=(BATCH, LSTM)).astype("float32") for _ in range(2 * len(DIMS))]
    states.append(rng.normal(size=(BATCH, MEMORY)).astype("float32"))
    return x, states


def _call(cell, x, states, training=False):
    output, new_states = cell(x, states, training=training)
    return keras.ops.convert_to_numpy(output), [
        keras.ops.convert_to_numpy(s) for s in new_states
    ]


def _assert_step_matches(actual, expected):
    output, states = actual
    ref_output, ref_states = expected
    assert len(states) == len(ref_states) == 2 * len(DIMS) + 1
    np.testing.assert_allclose(output, ref_output, rtol=1e-5, atol=1e-5)
    for got, want in zip(states, ref_states):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_graph", [False, True])
def test_step_matches_numpy_reference(use_graph):
    cell = _cell(use_graph=use_graph)
    x, states = _step_data()
    actual = _call(cell, x, states)
    assert actual[0].shape == (BATCH, len(DIMS) * LSTM + MEMORY)
    _assert_step_matches(actual, cell_reference(cell, x, states))


def test_output_and_state_sizes():
    for use_graph in (False, True):
        cell = MemoryFusionCell(
            [3, 2], lstm_dim=4, memory_dim=5, use_graph=use_graph, graph_dim=7
        )
        assert cell.state_size == [4, 4, 4, 4, 5]
        assert cell.output_size == 2 * 4 + 5
    cell = _cell()
    x, states = _step_data()
    output, new_states = _call(cell, x, states)
    assert output.shape == (BATCH, cell.output_size)
    assert [s.shape[-1] for s in new_states] == cell.state_size


def test_external_keep_scales_of_one_equal_internal_dropout_cell():
    x, states = _step_data()
    internal = _cell(dropout=0.5)
    external = _cell(external_dropout=True, dropout=0.5, seed=99)
    external.set_weights(internal.get_weights())
    ones = np.ones((BATCH, 3 * GATE), "float32")
    _assert_step_matches(
        _call(external, np.concatenate([x, ones], -1), states),
        _call(internal, x, states),
    )


@pytest.mark.parametrize("use_graph", [False, True])
@pytest.mark.parametrize("block", [0, 1, 2])
def test_external_keep_scales_zero_one_gate_block(use_graph, block):
    cell = _cell(use_graph=use_graph, external_dropout=True)
    x, states = _step_data()
    rng = np.random.default_rng(block)
    keep = np.ones((BATCH, 3 * GATE), "float32")
    keep[:, block * GATE : (block + 1) * GATE] = 2.0 * rng.integers(
        0, 2, size=(BATCH, GATE)
    )
    keep[0, block * GATE] = 0.0
    actual = _call(cell, np.concatenate([x, keep], -1), states)
    _assert_step_matches(actual, cell_reference(cell, x, states, keep=keep))
    unmasked = cell_reference(cell, x, states)
    assert not np.allclose(actual[0], unmasked[0], atol=1e-5)


def test_external_dropout_draws_no_random_numbers():
    cell = _cell(external_dropout=True, dropout=0.5)
    x, states = _step_data()
    keep = np.random.default_rng(3).choice([0.0, 2.0], size=(BATCH, 3 * GATE))
    step = np.concatenate([x, keep.astype("float32")], -1)
    first = _call(cell, step, states, training=True)
    second = _call(cell, step, states, training=True)
    inference = _call(cell, step, states, training=False)
    for a, b, c in zip([first[0]] + first[1], [second[0]] + second[1],
                       [inference[0]] + inference[1]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_internal_dropout_is_drawn_in_training_only():
    cell = _cell(dropout=0.5)
    x, states = _step_data()
    first, _ = _call(cell, x, states, training=True)
    second, _ = _call(cell, x, states, training=True)
    assert not np.allclose(first, second)
    _assert_step_matches(_call(cell, x, states, training=False),
                         cell_reference(cell, x, states))


@pytest.mark.parametrize("use_graph", [False, True])
def test_rnn_matches_numpy_loop(use_graph):
    steps = 4
    cell = _cell(use_graph=use_graph, external_dropout=True, dropout=0.5)
    rng = np.random.default_rng(4)
    sequence = rng.normal(size=(BATCH, steps, sum(DIMS))).astype("float32")
    keep = rng.choice([0.0, 2.0], size=(BATCH, steps, 3 * GATE)).astype("float32")
    _, states = _step_data(seed=5)
    rnn = keras.layers.RNN(cell, return_sequences=True, return_state=True)
    result = rnn(np.concatenate([sequence, keep], -1), initial_state=states)
    outputs = keras.ops.convert_to_numpy(result[0])
    final = [keras.ops.convert_to_numpy(s) for s in result[1:]]
    assert outputs.shape == (BATCH, steps, cell.output_size)
    expected = []
    for t in range(steps):
        out, states = cell_reference(cell, sequence[:, t], states, keep=keep[:, t])
        expected.append(out)
    np.testing.assert_allclose(outputs, np.stack(expected, 1), rtol=1e-5, atol=1e-5)
    assert len(final) == len(states)
    for got, want in zip(final, states):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_graph", [False, True])
def test_config_and_keras_file_round_trip(tmp_path, use_graph):
    cell = MemoryFusionCell(
        [3, 2],
        lstm_dim=3,
        memory_dim=4,
        attention_dim=5,
        gate_dim=2,
        dropout=0.3,
        use_graph=use_graph,
        graph_dim=6,
        external_dropout=True,
        name="fusion_cell",
    )
    config = cell.get_config()
    init_args = set(inspect.signature(MemoryFusionCell.__init__).parameters)
    assert init_args - {"self", "kwargs"} <= set(config)
    assert MemoryFusionCell.from_config(config).get_config() == config
    inputs = keras.Input((4, 5 + 3 * 2))
    model = keras.Model(inputs, keras.layers.RNN(cell, name="memory_fusion")(inputs))
    rng = np.random.default_rng(6)
    for weight in model.weights:
        weight.assign(0.5 * rng.normal(size=weight.shape).astype("float32"))
    path = tmp_path / "x.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    data = rng.normal(size=(2, 4, 11)).astype("float32")
    data[..., 5:] = rng.choice([0.0, 2.0], size=(2, 4, 6))
    np.testing.assert_array_equal(
        loaded.predict(data, verbose=0), model.predict(data, verbose=0)
    )
    loaded_cell = loaded.get_layer("memory_fusion").cell
    assert isinstance(loaded_cell, MemoryFusionCell)
    assert loaded_cell.get_config() == config


def test_graph_with_too_many_modalities_raises():
    MemoryFusionCell([1] * 7)
    with pytest.raises(ValueError, match="supports 1 to 6 modalities, got 7"):
        MemoryFusionCell([1] * 7, use_graph=True)


@pytest.mark.parametrize(
    "external, width, message",
    [
        (False, 9, r"step input has width 9, expected 5 \(modality dims \[2, 3\]\)"),
        (True, 5, r"step input has width 5, expected 17 \(modality dims \[2, 3\] "
                  r"\+ 3 \* gate_dim=12 keep-scales\)"),
    ],
)
def test_step_input_of_the_wrong_width_raises(external, width, message):
    cell = MemoryFusionCell([2, 3], lstm_dim=2, memory_dim=2, gate_dim=4,
                            external_dropout=external)
    with pytest.raises(ValueError, match=message):
        keras.layers.RNN(cell)(np.ones((1, 3, width), "float32"))
