"""Recurrent cell of the Memory Fusion Network and of Graph-MFN."""

import keras
from keras import ops

from keras_mre.layers.dynamic_fusion_graph import DynamicFusionGraph


@keras.saving.register_keras_serializable(package="keras_mre")
class MemoryFusionCell(keras.layers.Layer):
    """One time step of MFN (Zadeh et al. 2018a), for `keras.layers.RNN`.

    A System of LSTMs holds one LSTM per modality. At step `t` the
    Delta-memory Attention Network reads the concatenated cell states of two
    consecutive steps, `c* = [c_{t-1}; c_t]`, and attends over them,
    `c^ = c* ⊙ softmax(D_a(c*))` (MFN eq 1-2). The Multi-view Gated Memory
    updates `u_t = g1 ⊙ u_{t-1} + g2 ⊙ tanh(D_u(c^))` with retain and update
    gates `g1 = sigmoid(D_g1(c^))`, `g2 = sigmoid(D_g2(c^))` (eq 3-5).
    With `use_graph=True` (Graph-MFN), `c^` is split per modality and passed
    through a `DynamicFusionGraph`, whose output feeds the memory instead.
    The cell's output is `[h_1; ...; h_M; u_t]` (MFN's final representation
    when read at the last step).

    Dropout on the three gate networks' hidden layers is drawn afresh at
    every step. With `external_dropout=True` the cell draws no random
    numbers itself: each step input ends with `3 * gate_dim` keep-scales
    (0 or `1 / (1 - rate)`, ones outside training; blocks of `gate_dim` for
    the update, retain and write networks in that order), drawn for all steps
    before the recurrence (`memory_fusion_graph` does this with a `Dropout`
    layer on ones). That keeps per-step masks and lets the recurrence run
    inside a JAX `scan`, where a random-number state cannot be advanced.

    Args:
        modality_dims: list of int, the width of each modality's input; the
            step input is their concatenation.
        lstm_dim: int, hidden width of every modality LSTM.
        memory_dim: int, width of the memory `u`.
        attention_dim: int, hidden width of `D_a`.
        gate_dim: int, hidden width of `D_u`, `D_g1`, `D_g2`.
        dropout: float, dropout inside the gate networks.
        use_graph: bool, fuse with a Dynamic Fusion Graph (Graph-MFN).
        graph_dim: int, width of the graph's vertices and output.
        external_dropout: bool, read the gate dropout keep-scales from the
            end of the step input instead of drawing them.
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        inputs: `[batch, sum(modality_dims)]`, or `[batch,
            sum(modality_dims) + 3 * gate_dim]` with `external_dropout`.
        states: `2 M + 1` tensors: `h_m`, `c_m` `[batch, lstm_dim]` per
            modality, then `u` `[batch, memory_dim]`.

    Returns:
        `([batch, M * lstm_dim + memory_dim], new_states)`.
    """

    def __init__(
        self,
        modality_dims,
        lstm_dim=32,
        memory_dim=64,
        attention_dim=64,
        gate_dim=64,
        dropout=0.2,
        use_graph=False,
        graph_dim=64,
        external_dropout=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.modality_dims = [int(d) for d in modality_dims]
        self.lstm_dim = int(lstm_dim)
        self.memory_dim = int(memory_dim)
        self.attention_dim = int(attention_dim)
        self.gate_dim = int(gate_dim)
        self.dropout = float(dropout)
        self.use_graph = bool(use_graph)
        self.graph_dim = int(graph_dim)
        self.external_dropout = bool(external_dropout)
        count = len(self.modality_dims)
        self.state_size = [self.lstm_dim] * (2 * count) + [self.memory_dim]
        self.output_size = count * self.lstm_dim + self.memory_dim
        self.lstms = [
            keras.layers.LSTMCell(self.lstm_dim, name=f"lstm_{m}")
            for m in range(count)
        ]
        cells = 2 * count * self.lstm_dim
        self.attention_hidden = keras.layers.Dense(
            self.attention_dim, activation="relu", name="attention_hidden"
        )
        self.attention_out = keras.layers.Dense(cells, name="attention_out")
        if self.use_graph:
            self.graph = DynamicFusionGraph(
                [2 * self.lstm_dim] * count,
                self.graph_dim,
                self.graph_dim,
                name="graph",
            )
        self.gate_hidden = [
            keras.layers.Dense(self.gate_dim, activation="relu", name=f"{n}_hidden")
            for n in ("update", "retain", "write")
        ]
        self.gate_out = [
            keras.layers.Dense(self.memory_dim, name=n)
            for n in ("update", "retain", "write")
        ]
        self.drop = keras.layers.Dropout(self.dropout)

    def build(self, input_shape):
        width = input_shape[-1]
        expected = sum(self.modality_dims)
        if self.external_dropout:
            expected += 3 * self.gate_dim
        if width is not None and width != expected:
            extra = (f" + 3 * gate_dim={3 * self.gate_dim} keep-scales"
                     if self.external_dropout else "")
            raise ValueError(
                f"MemoryFusionCell: step input has width {width}, expected "
                f"{expected} (modality dims {self.modality_dims}{extra})"
            )
        for m, lstm in enumerate(self.lstms):
            lstm.build((None, self.modality_dims[m]))
        cells = 2 * len(self.modality_dims) * self.lstm_dim
        self.attention_hidden.build((None, cells))
        self.attention_out.build((None, self.attention_dim))
        fused = cells
        if self.use_graph:
            self.graph.build([(None, 2 * self.lstm_dim)] * len(self.lstms))
            fused = self.graph_dim
        for hidden, out in zip(self.gate_hidden, self.gate_out):
            hidden.build((None, fused))
            out.build((None, self.gate_dim))
        self.built = True

    def call(self, inputs, states, training=None):
        count = len(self.modality_dims)
        memory = states[-1]
        offsets = [0]
        for dim in self.modality_dims:
            offsets.append(offsets[-1] + dim)
        hiddens, old_cells, new_cells, new_states = [], [], [], []
        for m, lstm in enumerate(self.lstms):
            step = inputs[:, offsets[m] : offsets[m + 1]]
            h, (h, c) = lstm(
                step, [states[2 * m], states[2 * m + 1]], training=training
            )
            hiddens.append(h)
            old_cells.append(states[2 * m + 1])
            new_cells.append(c)
            new_states.extend([h, c])
        both = ops.concatenate(old_cells + new_cells, axis=-1)
        scores = self.attention_out(self.attention_hidden(both))
        attended = both * ops.softmax(scores, axis=-1)
        if self.use_graph:
            width = count * self.lstm_dim
            per_modality = []
            for m in range(count):
                lo, hi = m * self.lstm_dim, (m + 1) * self.lstm_dim
                per_modality.append(
                    ops.concatenate(
                        [attended[:, lo:hi], attended[:, width + lo : width + hi]],
                        axis=-1,
                    )
                )
            attended = self.graph(per_modality)
        gates = []
        for index, (hidden, out) in enumerate(zip(self.gate_hidden, self.gate_out)):
            inner = hidden(attended)
            if self.external_dropout:
                start = offsets[-1] + index * self.gate_dim
                inner = inner * inputs[:, start : start + self.gate_dim]
            else:
                inner = self.drop(inner, training=training)
            gates.append(out(inner))
        update, retain, write = gates
        memory = ops.sigmoid(retain) * memory + ops.sigmoid(write) * ops.tanh(
            update
        )
        new_states.append(memory)
        output = ops.concatenate(hiddens + [memory], axis=-1)
        return output, new_states

    def get_config(self):
        config = super().get_config()
        config.update(
            modality_dims=self.modality_dims,
            lstm_dim=self.lstm_dim,
            memory_dim=self.memory_dim,
            attention_dim=self.attention_dim,
            gate_dim=self.gate_dim,
            dropout=self.dropout,
            use_graph=self.use_graph,
            graph_dim=self.graph_dim,
            external_dropout=self.external_dropout,
        )
        return config
