"""LSTM encoder over token or frame features with per-clip lengths."""

import warnings

import keras
from keras import ops

from keras_mre import _cpu
from keras_mre.config import LSTM_IMPLEMENTATIONS as IMPLEMENTATIONS
from keras_mre.config import LSTM_PROJECTION_DTYPES as PROJECTION_DTYPES
from keras_mre.errors import ConfigError


class _ProjectedLSTMCell(keras.layers.Layer):
    """LSTM step on pre-projected gates.

    Step input: `[batch, 4 * units]`, the gates' input part `x_t W + b`
    (order input, forget, output, candidate). States: `h` and `c`; the step
    output is `h`.
    """

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = [units, units]
        self.output_size = units

    def build(self, input_shape):
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel",
            shape=(self.units, 4 * self.units),
            initializer="orthogonal",
        )

    def call(self, inputs, states, training=None):
        h, c = states
        split = 3 * self.units
        z = inputs + ops.matmul(h, self.recurrent_kernel)
        input_gate, forget_gate, output_gate = ops.split(
            ops.sigmoid(z[:, :split]), 3, axis=-1
        )
        c = forget_gate * c + input_gate * ops.tanh(z[:, split:])
        h = output_gate * ops.tanh(c)
        return h, [h, c]

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units})
        return config


@keras.saving.register_keras_serializable(package="keras_mre")
class LSTMEncoder(keras.layers.Layer):
    """A single-layer LSTM returning the state after each clip's last valid step.

    The text encoder of the paper (section 3.1). The input projection of all
    four gates, `x_t W + b`, is computed for the valid steps of every clip at
    once as one 2-D matrix product `[valid steps, features] x [features,
    4 * units]` (most of an LSTM's work at BERT widths); padding steps are
    neither projected nor differentiated. Only the recurrent product
    `h_{t-1} U` runs step by step, in Keras' RNN loop, and only for the
    first `max(lengths)` steps of the batch. (On backends other than
    TensorFlow every step is projected and run, with static shapes; the
    output is the same.)

    Each clip's output is its hidden state after step `length - 1`, picked
    from the loop's outputs, so steps after a clip's end never affect it:
    padding changes nothing without any per-step masking, and a clip with
    zero valid steps returns the zero vector. (The LSTM is causal, so
    running over padding afterwards is harmless.) A time axis of 0 steps is
    allowed and also gives zeros.

    Gates (order input, forget, output, candidate; forget-gate bias
    initialised to 1):

        i, f, o, g = split(x_t W + b + h_{t-1} U)
        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)

    Two implementations compute the same function:

    - `"generic"`: the recurrence in Keras' RNN loop, written in
      `keras.ops` (every backend; automatic gradient).
    - `"xla"`: TensorFlow only; the recurrence as an XLA-compiled loop with
      a hand-written gradient (`keras_mre/layers/_lstm_xla_kernel.py`),
      1.7-1.9x faster to train on CPU (recurrence, forward and gradient);
      the clips are sorted longest first and leave the loop as they end,
      and on a CPU the batch is cut into up to 4 shards (one per inter-op
      thread, at least 8 clips each) whose loops run at once.
      Each new input shape compiles once (about 1.5-2.5 s).
    - `"auto"` (default): `"xla"` in training calls on the TensorFlow
      backend, `"generic"` otherwise, so inference graphs and exported
      SavedModels contain plain TensorFlow ops and need no XLA.

    The input projection may run at lower precision (`projection_dtype`
    `"bfloat16"` or `"float16"`): the features and `W` are cast to that
    dtype for the product, whose result (rounded to it: bfloat16 keeps about
    3 significant digits) is cast back before `+ b`; the kernel stays a
    float32 variable and the recurrence runs in float32. On CPUs with
    bfloat16 instructions (AVX512_BF16, AMX) the product runs about 1.9x
    faster and MRE and LMF training steps on MOSEI shapes 1.05-1.27x
    (`docs/performance.md`); elsewhere it may be slower, and the layer warns
    when `/proc/cpuinfo` lists no bfloat16 instructions.

    Args:
        units: output width `d` (the hidden state size).
        dropout: dropout rate on the returned state.
        implementation: `"auto"`, `"xla"` or `"generic"` (see above).
        projection_dtype: None (the layer's compute dtype), `"float32"`,
            `"bfloat16"` or `"float16"`: dtype of the input projection's
            product (see above).

    Call arguments:
        inputs: `[batch, time, features]`.
        lengths: valid step counts `[batch]` (int); `None` means all valid.
            Counts above `time` count as `time`.
        training: dropout switch.

    Returns:
        The hidden state after the last valid step, `[batch, units]`.
    """

    def __init__(
        self,
        units,
        dropout=0.0,
        implementation="auto",
        projection_dtype=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if units <= 0:
            raise ConfigError(f"units={units!r}: expected a positive integer")
        if implementation not in IMPLEMENTATIONS:
            raise ConfigError(
                f"implementation={implementation!r}: expected one of {IMPLEMENTATIONS}"
            )
        if implementation == "xla" and keras.config.backend() != "tensorflow":
            raise ConfigError(
                "implementation='xla' needs the tensorflow backend, not "
                f"{keras.config.backend()!r}; use 'auto' or 'generic'"
            )
        if projection_dtype not in PROJECTION_DTYPES:
            raise ConfigError(
                f"projection_dtype={projection_dtype!r}: expected one of "
                f"{PROJECTION_DTYPES}"
            )
        if projection_dtype == "bfloat16" and _cpu.has_bfloat16_instructions() is False:
            warnings.warn(
                "LSTMEncoder(projection_dtype='bfloat16'): this CPU has no "
                "bfloat16 instructions (no avx512_bf16, amx_bf16 or bf16 flag), "
                "so the product is emulated and may be slower than float32 "
                "when it runs on the CPU",
                stacklevel=2,
            )
        self.units = units
        self.dropout = dropout
        self.implementation = implementation
        self.projection_dtype = projection_dtype
        self.cell = _ProjectedLSTMCell(units, name="cell", dtype=self.dtype_policy)
        self.rnn = keras.layers.RNN(
            self.cell, return_sequences=True, name="rnn", dtype=self.dtype_policy
        )
        self.dropout_layer = keras.layers.Dropout(dropout, name="dropout")

    def build(self, inputs_shape, lengths_shape=None):
        features = inputs_shape[-1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=(features, 4 * self.units),
            initializer="glorot_uniform",
        )
        units = self.units

        def bias_initializer(shape, dtype=None):
            forget = ops.concatenate(
                [ops.zeros((units,)), ops.ones((units,)), ops.zeros((2 * units,))]
            )
            return ops.cast(forget, dtype)

        self.bias = self.add_weight(
            name="bias", shape=(4 * units,), initializer=bias_initializer
        )
        self.rnn.build((None, None, 4 * units))

    def call(self, inputs, lengths=None, training=None):
        units = self.units
        batch = ops.shape(inputs)[0]
        steps = ops.shape(inputs)[1]
        if lengths is None:
            lengths = ops.full((batch,), steps, dtype="int32")
        lengths = ops.minimum(ops.cast(lengths, "int32"), steps)
        if self._use_xla(training):
            picked = self._xla_last_state(inputs, lengths)
            return self.dropout_layer(picked, training=training)
        if keras.config.backend() != "tensorflow":
            # Static shapes (JAX compiles every step function): project and
            # run every step. A step after a clip's last valid one never
            # changes the output picked at that step, so the values are
            # those of the path below.
            gates = self._project(inputs) + self.bias
            gates = ops.pad(gates, [[0, 0], [0, 0 if steps else 1], [0, 0]])
            outputs = self.rnn(gates)
            last = ops.arange(ops.shape(outputs)[1], dtype="int32")[None, :]
            last = ops.cast(last == lengths[:, None] - 1, outputs.dtype)
            picked = ops.sum(outputs * last[:, :, None], axis=1)
            return self.dropout_layer(picked, training=training)
        valid = ops.arange(steps, dtype="int32")[None, :] < lengths[:, None]
        gates = self._project_valid_steps(inputs, valid, lambda r: r)
        gates = ops.reshape(gates, (batch, steps, 4 * units))
        # The loop runs over the first max(lengths) steps only, and over at
        # least one step (all-zero gates, never picked when there is no
        # valid step), so the output is always defined.
        longest = ops.max(ops.concatenate([lengths, ops.zeros((1,), "int32")]))
        run = ops.maximum(longest, 1)
        gates = ops.pad(gates, [[0, 0], [0, run - ops.minimum(steps, run)], [0, 0]])
        outputs = self.rnn(gates[:, :run])
        last = ops.arange(run, dtype="int32")[None, :] == lengths[:, None] - 1
        last = ops.cast(last, outputs.dtype)
        picked = ops.sum(outputs * last[:, :, None], axis=1)
        return self.dropout_layer(picked, training=training)

    def _xla_last_state(self, inputs, lengths):
        """The training path of `implementation="xla"`: `[batch, units]`."""
        from keras_mre.layers import _lstm_xla_kernel

        units = self.units
        batch, steps = ops.shape(inputs)[0], ops.shape(inputs)[1]
        # The batch runs as `shards` independent loops, which graph
        # execution runs at once on separate threads (each loop's small
        # products use one core). Sorted clip q goes to shard q % shards,
        # row q // shards, so every shard's rows stay sorted longest first
        # and the shards' lengths are alike; the batch is padded with empty
        # clips to a multiple of `shards`.
        shards = _lstm_xla_kernel.shards_for(inputs.shape[0])
        rows = (batch + shards - 1) // shards
        lengths = ops.pad(lengths, [[0, shards * rows - batch]])
        order = ops.cast(ops.argsort(-lengths), "int32")
        shard_lengths = ops.transpose(
            ops.reshape(ops.take(lengths, order), (rows, shards))
        )
        # The kernel lays the gates out as `[shards, time, rows, 4 * units]`:
        # the valid steps are listed in that order (position (s * steps + t)
        # * rows + j: shard s, step t, row j, i.e. sorted clip j * shards +
        # s) and gathered from the batch-major inputs (row clip * steps +
        # t), so neither a transpose nor a sort of the features runs on
        # either side of the kernel.
        step_index = ops.arange(steps, dtype="int32")
        valid = step_index[None, :, None] < shard_lengths[:, None, :]

        def source_row(r):
            shard, step, row = r // (steps * rows), (r // rows) % steps, r % rows
            return ops.take(order, row * shards + shard) * steps + step

        positions, gates = self._project_valid_rows(inputs, valid, source_row)
        kernel = ops.convert_to_tensor(self.cell.recurrent_kernel)
        picked = _lstm_xla_kernel.lstm_last_state(
            gates, positions, kernel, shard_lengths, steps
        )
        # Back to sorted order (clip j * shards + s), then the clips' own.
        picked = ops.reshape(ops.transpose(picked, (1, 0, 2)), (shards * rows, units))
        return ops.take(picked, ops.argsort(order), axis=0)[:batch]

    def _project_valid_steps(self, inputs, valid, source_row):
        """`x_t W + b` of the valid steps only, zeros elsewhere.

        `valid` is a boolean matrix whose flattened entry r is gate row r
        of the result, and `source_row(r)` its row in the `[batch * steps,
        features]` inputs; padding steps get zero gates, which no output
        ever reads.
        """
        rows, projected = self._project_valid_rows(inputs, valid, source_row)
        return ops.scatter(
            rows[:, None], projected, (ops.size(valid), 4 * self.units)
        )

    def _project_valid_rows(self, inputs, valid, source_row):
        """`(rows, x_t W + b)`: the flat indices r of `valid`'s true entries
        and their gates `[len(rows), 4 * units]` (see `_project_valid_steps`).

        The valid steps of all clips are projected in one 2-D product (a
        3-D x 2-D product would run as a broadcast batch product, whose
        kernel gradient is far slower).
        """
        features = inputs.shape[-1]
        (rows,) = ops.nonzero(ops.reshape(valid, (-1,)))
        rows = ops.cast(rows, "int32")
        projected = self._project(
            ops.take(ops.reshape(inputs, (-1, features)), source_row(rows), axis=0)
        )
        return rows, projected + self.bias

    def _project(self, inputs):
        """`inputs W`, in `projection_dtype` where one is set."""
        low = self.projection_dtype
        if low is None or low == self.compute_dtype:
            return ops.matmul(inputs, self.kernel)
        product = ops.matmul(ops.cast(inputs, low), ops.cast(self.kernel, low))
        return ops.cast(product, self.compute_dtype)

    def _use_xla(self, training):
        if self.implementation == "auto":
            # A symbolic `training` (not a Python flag) keeps the generic path.
            flag = training is not None and not hasattr(training, "shape")
            return flag and bool(training) and keras.config.backend() == "tensorflow"
        return self.implementation == "xla"

    def compute_output_shape(self, inputs_shape, lengths_shape=None):
        return (inputs_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "dropout": self.dropout,
                "implementation": self.implementation,
                "projection_dtype": self.projection_dtype,
            }
        )
        return config
