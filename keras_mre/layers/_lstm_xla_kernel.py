"""XLA-compiled LSTM recurrence with a hand-written gradient (TensorFlow backend).

The training-time fast path of `LSTMEncoder` (its `implementation="xla"`,
and `"auto"` in training steps on the TensorFlow backend). This is the one
place where a layer's numerics are written in TensorFlow rather than
`keras.ops`: on CPU, a graph-mode `while` loop spends most of an LSTM step in
per-op dispatch (about 15 small ops per step forward and twice that for the
automatic gradient), and Keras has no fused CPU LSTM kernel. Compiling the
forward loop and a hand-written backward loop with XLA fuses each step's
element-wise work into one kernel; the gradient of the recurrent kernel is
one large matrix product over all steps, after the compiled backward
function, instead of one small product per step.
`tests/layers/test_lstm_encoder.py` checks values and gradients against the
generic `keras.ops` path.

Shapes: `gates` `[time, batch, 4 * units]`, time-major (the input part
`x_t W + b` of the gates, order input, forget, output, candidate; the
encoder gathers its input rows in time-major order, so no transpose is
needed on either side of the kernel), `kernel` `[units,
4 * units]` (the recurrent kernel `U`), `lengths` `[batch]` int32, already
clipped to `[0, time]` and **sorted longest first** (the encoder sorts its
clips in the same gather). `time` must be at least 1. The result is each
clip's hidden state after its step `length - 1`, `[batch, units]`, and zeros
for a clip of length 0.

Clips drop out of the loop as they end, as in a packed sequence: the batch
is cut into `GROUPS` phases of static row counts (`batch, batch / 2` with
the default 2; the first rows hold the longest clips), and phase `k` runs
its rows only until the longest clip of the rows it leaves behind has
ended. Every step still runs once (the phases split the time axis), but
the products of the later steps shrink with the clips still running. Each
phase is one more compiled loop forward and backward. On MOSEI-like
lengths (10-50 tokens) two phases took the encoder's forward and gradient
6-8 % below one phase (the whole batch at every step) at batch 32 and 64,
for 0.4-0.5 s more compilation per shape; four and eight phases gained at
most a few points more for 1.3-3 s more
(`benchmarks/results/lstm_recurrence.md`).

Each XLA function is compiled once per input shape: with `load_dataset`'s
fixed padding that is once for full batches and once for the last one. The
loops run over the first `max(lengths)` steps only; the trip counts are
tensors, not shapes, so they do not cause recompilation.
"""

import tensorflow as tf


# Phases of the packed loop (see the module docstring): row counts
# batch - floor(k * batch / GROUPS), k = 0 .. GROUPS - 1.
GROUPS = 2


def _dim(tensor, axis):
    """A static dimension where the trace knows it (so that the phases'
    row slices keep static shapes inside the loops), else a tensor."""
    static = tensor.shape[axis]
    return tf.shape(tensor)[axis] if static is None else static


def _phases(lengths, time, batch, groups):
    """Static row counts and end steps of the phases (`lengths` sorted
    longest first). Phase `k` runs rows `[0, rows[k])` from the end of phase
    `k - 1` to `ends[k]`: the length of the longest row it leaves behind
    (row `rows[k + 1]`), and for the last phase `max(lengths)`, at least 1.
    The row counts are fixed by the batch size, which XLA knows when it
    compiles, so every phase has static shapes."""
    padded = tf.concat([lengths, tf.zeros([1], lengths.dtype)], 0)
    rows = [batch - (k * batch) // groups for k in range(groups)]
    ends = [tf.minimum(padded[rows[k + 1]], time) for k in range(groups - 1)]
    ends.append(tf.minimum(tf.maximum(padded[0], 1), time))
    return rows, ends


def _forward(gates, kernel, lengths, groups):
    # Shapes are read dynamically: with reduce_retracing, a trace may have
    # unknown dimensions (XLA still compiles each concrete shape, where the
    # phases' row counts become constants).
    units = tf.shape(kernel)[0]
    time, batch = tf.shape(gates)[0], _dim(gates, 1)
    last = lengths - 1
    rows, ends = _phases(lengths, time, batch, groups)

    def array():
        return tf.TensorArray(gates.dtype, size=time, element_shape=[None, None])

    h = c = picked = tf.zeros([batch, units], gates.dtype)
    t, hs, cs, acts = tf.constant(0), array(), array(), array()
    for n, end in zip(rows, ends):
        h, c = h[:n], c[:n]
        # Saved steps keep the whole batch: rows that have left hold zeros.
        fill = [[0, batch - n], [0, 0]]

        def body(t, h, c, picked, hs, cs, acts, n=n, fill=fill):
            # The step first, then the rows: `gates[t, :n]` would lose the
            # static row count (the begin index is not a constant).
            z = gates[t][:n] + tf.matmul(h, kernel)
            sigmoids = tf.sigmoid(z[:, : 3 * units])
            candidate = tf.tanh(z[:, 3 * units :])
            input_gate, forget_gate, output_gate = tf.split(sigmoids, 3, axis=1)
            c = forget_gate * c + input_gate * candidate
            h = output_gate * tf.tanh(c)
            picked = tf.where((last == t)[:, None], tf.pad(h, fill), picked)
            acts = acts.write(t, tf.pad(tf.concat([sigmoids, candidate], 1), fill))
            return (t + 1, h, c, picked, hs.write(t, tf.pad(h, fill)),
                    cs.write(t, tf.pad(c, fill)), acts)

        t, h, c, picked, hs, cs, acts = tf.while_loop(
            lambda t, *_, end=end: t < end, body, (t, h, c, picked, hs, cs, acts)
        )
    return picked, hs.stack(), cs.stack(), acts.stack()


def _backward(d_picked, lengths, hs, cs, acts, kernel, groups):
    units = tf.shape(kernel)[0]
    time, batch = tf.shape(hs)[0], _dim(hs, 1)
    c_prev = tf.concat([tf.zeros_like(cs[:1]), cs[:-1]], 0)
    last = lengths - 1
    rows, ends = _phases(lengths, time, batch, groups)
    d_gates = tf.TensorArray(hs.dtype, size=time, element_shape=[None, None])
    t = ends[-1] - 1
    dh = dc = tf.zeros([0, units], hs.dtype)
    for k in reversed(range(groups)):
        n = rows[k]
        # Rows that ended in this phase join with zero gradients.
        grow = [[0, n - tf.shape(dh)[0]], [0, 0]]
        dh, dc = tf.pad(dh, grow), tf.pad(dc, grow)
        start = ends[k - 1] if k else 0
        fill = [[0, batch - n], [0, 0]]

        def body(t, dh_next, dc_next, d_gates, n=n, fill=fill):
            i, f, o, g = tf.split(acts[t][:n], 4, axis=1)
            tanh_c = tf.tanh(cs[t][:n])
            dh = dh_next + tf.where(
                (last[:n] == t)[:, None], d_picked[:n], tf.zeros_like(dh_next)
            )
            dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
            dz = tf.concat(
                [
                    dc * g * i * (1.0 - i),
                    dc * c_prev[t][:n] * f * (1.0 - f),
                    dh * tanh_c * o * (1.0 - o),
                    dc * i * (1.0 - g * g),
                ],
                1,
            )
            dh_prev = tf.matmul(dz, kernel, transpose_b=True)
            return t - 1, dh_prev, dc * f, d_gates.write(t, tf.pad(dz, fill))

        t, dh, dc, d_gates = tf.while_loop(
            lambda t, *_, start=start: t >= start, body, (t, dh, dc, d_gates)
        )
    return d_gates.stack()


def _kernel_gradient(hs, d_gates):
    """The recurrent kernel's gradient, `sum_t h_{t-1}^T dz_t`, as one
    product over all steps (`h_{-1} = 0`, so step 0 adds nothing); unwritten
    steps (after max(lengths)) and rows that had left hold zeros. It runs
    outside XLA: TensorFlow's own CPU product of this shape (`[time * batch,
    units]^T x [time * batch, 4 * units]`, a long contraction) took about
    two thirds of the time of XLA's in a one-off check (`docs/performance.md`).
    """
    units = tf.shape(hs)[2]
    return tf.matmul(
        tf.reshape(hs[:-1], [-1, units]),
        tf.reshape(d_gates[1:], [-1, 4 * units]),
        transpose_a=True,
    )


_COMPILED = {}


def _compiled(groups):
    """The XLA-compiled forward and backward functions for `groups` phases."""
    if groups not in _COMPILED:
        def jit(fn):
            return tf.function(
                lambda *args: fn(*args, groups=groups),
                jit_compile=True, autograph=False, reduce_retracing=True,
            )

        _COMPILED[groups] = jit(_forward), jit(_backward)
    return _COMPILED[groups]


def lstm_last_state(gates, kernel, lengths, groups=GROUPS):
    """Hidden state after each clip's last valid step; see the module docstring.

    `lengths` must be sorted longest first. `kernel` may be a variable: it
    is read once here, so the gradient reaches the variable through that
    read. `groups` is the number of phases (1: every step runs the whole
    batch); benchmarks compare counts, the encoder uses the default.
    """
    forward, backward = _compiled(int(groups))

    @tf.custom_gradient
    def last_state(gates, kernel):
        # The compiled functions are never differentiated themselves:
        # without stop_gradient, an eager tape would ask TensorFlow for their
        # own forward-with-side-outputs variant, which XLA cannot compile.
        gates, kernel = tf.stop_gradient(gates), tf.stop_gradient(kernel)
        picked, hs, cs, acts = forward(gates, kernel, lengths)

        def grad(d_picked):
            # Dense: a gather after the kernel hands back IndexedSlices.
            d_picked = tf.stop_gradient(tf.convert_to_tensor(d_picked))
            d_gates = backward(d_picked, lengths, hs, cs, acts, kernel)
            d_kernel = _kernel_gradient(hs, d_gates)
            d_gates.set_shape(gates.shape)
            d_kernel.set_shape(kernel.shape)
            return d_gates, d_kernel

        return picked, grad

    picked = last_state(gates, tf.identity(kernel))
    # The compiled functions are traced with relaxed shapes once several
    # shapes were seen (reduce_retracing), so their outputs may carry no
    # static shape; layers after the encoder need `[batch, units]`.
    picked.set_shape(gates.shape[1:2].concatenate(kernel.shape[:1]))
    return picked
