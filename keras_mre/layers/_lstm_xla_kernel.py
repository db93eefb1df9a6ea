"""XLA-compiled LSTM recurrence with a hand-written gradient (TensorFlow backend).

The training-time fast path of `LSTMEncoder` (its `implementation="xla"`,
and `"auto"` in training steps on the TensorFlow backend). This is the one
place where a layer's numerics are written in TensorFlow rather than
`keras.ops`: on CPU, a graph-mode `while` loop spends most of an LSTM step in
per-op dispatch (about 15 small ops per step forward and twice that for the
automatic gradient), and Keras has no fused CPU LSTM kernel. Compiling the
forward loop and a hand-written backward loop with XLA fuses each step's
element-wise work into one kernel; the gradient of the recurrent kernel is
one large matrix product over the valid steps, after the compiled backward
function, instead of one small product per step.
`tests/layers/test_lstm_encoder.py` checks values and gradients against the
generic `keras.ops` path.

Shapes: the kernel lays the gates out as `[shards, time, rows, 4 *
units]`, time-major within each shard (the input part `x_t W + b` of the
gates, order input, forget, output, candidate). It receives only the valid
steps' gates, with each one's position in that layout (the encoder gathers
its input rows in this order, so no transpose is needed on either side of
the kernel), and hands back the gradient of those rows only, the same
positions serving the recurrent kernel's gradient. `kernel` `[units,
4 * units]` (the recurrent kernel `U`), `lengths` `[shards, rows]` int32,
already clipped to `[0, time]` and each shard's rows **sorted longest
first** (the encoder sorts its clips in the same gather). With `time` 0
the loops run one all-zero step. The result is each clip's hidden state
after its step `length - 1`, `[shards, rows, units]`, and zeros for a clip
of length 0.

The shards are independent loops: graph execution runs them at once, one
per inter-op thread. Each step's products are small (`[rows, units] x
[units, 4 * units]`), and XLA runs each on one core, so on a 2-core CPU
two shards ran the encoder's forward pass and gradient 1.17-1.18x faster
than one loop over the whole batch, at batch 32 and 64
(`benchmarks/results/lstm_recurrence_shards.md`). `shards_for` picks the
count.

Clips drop out of the loop as they end, as in a packed sequence: each
shard is cut into `GROUPS` phases of static row counts (`rows, rows / 2` with
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

import functools
import os

import tensorflow as tf


# Phases of the packed loop (see the module docstring): row counts
# rows - floor(k * rows / GROUPS), k = 0 .. GROUPS - 1, of each shard.
GROUPS = 2

# Shards of a batch run concurrently (see `shards_for`).
MAX_SHARDS = 4
MIN_ROWS = 8


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
    t, h_prev, cs, acts = tf.constant(0), array(), array(), array()
    for n, end in zip(rows, ends):
        h, c = h[:n], c[:n]
        # Saved steps keep the whole batch: rows that have left hold zeros.
        fill = [[0, batch - n], [0, 0]]

        def body(t, h, c, picked, h_prev, cs, acts, n=n, fill=fill):
            # The step first, then the rows: `gates[t, :n]` would lose the
            # static row count (the begin index is not a constant).
            z = gates[t][:n] + tf.matmul(h, kernel)
            # h_{t-1} at step t, for the recurrent kernel's gradient.
            h_prev = h_prev.write(t, tf.pad(h, fill))
            sigmoids = tf.sigmoid(z[:, : 3 * units])
            candidate = tf.tanh(z[:, 3 * units :])
            input_gate, forget_gate, output_gate = tf.split(sigmoids, 3, axis=1)
            c = forget_gate * c + input_gate * candidate
            h = output_gate * tf.tanh(c)
            picked = tf.where((last == t)[:, None], tf.pad(h, fill), picked)
            acts = acts.write(t, tf.pad(tf.concat([sigmoids, candidate], 1), fill))
            return t + 1, h, c, picked, h_prev, cs.write(t, tf.pad(c, fill)), acts

        t, h, c, picked, h_prev, cs, acts = tf.while_loop(
            lambda t, *_, end=end: t < end, body, (t, h, c, picked, h_prev, cs, acts)
        )
    return picked, h_prev.stack(), cs.stack(), acts.stack()


def _backward(d_picked, lengths, cs, acts, kernel, groups):
    units = tf.shape(kernel)[0]
    time, batch = tf.shape(cs)[0], _dim(cs, 1)
    c_prev = tf.concat([tf.zeros_like(cs[:1]), cs[:-1]], 0)
    last = lengths - 1
    rows, ends = _phases(lengths, time, batch, groups)
    d_gates = tf.TensorArray(cs.dtype, size=time, element_shape=[None, None])
    t = ends[-1] - 1
    dh = dc = tf.zeros([0, units], cs.dtype)
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


def _kernel_gradient(h_prev, d_gates):
    """The recurrent kernel's gradient, `sum_t h_{t-1}^T dz_t`, as one
    product over the valid steps of all shards: `h_prev` holds `h_{t-1}`
    (zeros at step 0) and `d_gates` the gates' gradients of the same steps,
    `[valid steps, units]` and `[valid steps, 4 * units]`. After a clip's
    last valid step its gates' gradients are zero, so the valid steps give
    the whole sum. It runs outside XLA: TensorFlow's own CPU product of this
    shape (a long contraction) took about two thirds of the time of XLA's
    in a one-off check (`docs/performance.md`).
    """
    return tf.matmul(h_prev, d_gates, transpose_a=True)


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


def shards_for(batch):
    """How many shards the encoder cuts a batch of `batch` clips into (a
    Python int; `batch` may be None when the trace does not know it).

    One per inter-op thread (TensorFlow's setting, else the CPUs this
    process may use), at most `MAX_SHARDS`, and at most one per `MIN_ROWS`
    clips of a known batch; 1 where a GPU is visible (its products do not
    run on the CPU's threads).
    """
    if _gpu_visible():
        return 1
    threads = tf.config.threading.get_inter_op_parallelism_threads()
    if not threads and hasattr(os, "sched_getaffinity"):
        threads = len(os.sched_getaffinity(0))
    threads = threads or os.cpu_count() or 1
    shards = min(MAX_SHARDS, threads)
    if batch is not None:
        shards = min(shards, batch // MIN_ROWS)
    return max(1, shards)


@functools.lru_cache(maxsize=1)
def _gpu_visible():
    return bool(tf.config.list_logical_devices("GPU"))


def lstm_last_state(gates, positions, kernel, lengths, time, groups=GROUPS):
    """Hidden state after each clip's last valid step; see the module docstring.

    `gates` `[valid steps, 4 * units]` holds the input part of the gates of
    the valid steps only, and `positions` `[valid steps]` (int32) each
    one's flat index into the `[shards, time, rows]` layout; the other
    steps get zero gates. `lengths` `[shards, rows]` (static `shards`),
    each shard's rows sorted longest first; `time` the steps of the layout
    (0 is allowed: the loops then run one all-zero step). Returns `[shards,
    rows, units]`. `kernel` may be a variable: it is read once here, so the
    gradient reaches the variable through that read. `groups` is the number
    of phases (1: every step runs the whole shard); benchmarks compare
    counts, the encoder uses the default.
    """
    forward, backward = _compiled(int(groups))
    shards = lengths.shape[0]
    if shards is None:
        raise ValueError("lstm_last_state needs a static shard count (axis 0 of lengths)")
    rows = _dim(lengths, 1)
    width = gates.shape[-1] if gates.shape[-1] is not None else tf.shape(gates)[-1]

    @tf.custom_gradient
    def last_state(gates, kernel):
        # The compiled functions are never differentiated themselves:
        # without stop_gradient, an eager tape would ask TensorFlow for their
        # own forward-with-side-outputs variant, which XLA cannot compile.
        gates, kernel = tf.stop_gradient(gates), tf.stop_gradient(kernel)
        steps = tf.maximum(time, 1)
        laid_out = tf.reshape(
            tf.scatter_nd(positions[:, None], gates, [shards * steps * rows, width]),
            [shards, steps, rows, width],
        )
        # Independent calls: graph execution runs them on separate inter-op
        # threads at once.
        runs = [forward(laid_out[s], kernel, lengths[s]) for s in range(shards)]
        picked = tf.stack([run[0] for run in runs])

        def grad(d_picked):
            # Dense: a gather after the kernel hands back IndexedSlices.
            d_picked = tf.stop_gradient(tf.convert_to_tensor(d_picked))
            d_laid_out = tf.stack([
                backward(d_picked[s], lengths[s], cs, acts, kernel)
                for s, (_, _, cs, acts) in enumerate(runs)
            ])
            d_gates = tf.gather(tf.reshape(d_laid_out, [-1, width]), positions)
            h_prev = tf.stack([run[1] for run in runs])
            h_prev = tf.gather(tf.reshape(h_prev, [-1, tf.shape(kernel)[0]]), positions)
            d_kernel = _kernel_gradient(h_prev, d_gates)
            d_gates.set_shape(gates.shape)
            d_kernel.set_shape(kernel.shape)
            return d_gates, d_kernel

        return picked, grad

    picked = last_state(gates, tf.identity(kernel))
    # The compiled functions are traced with relaxed shapes once several
    # shapes were seen (reduce_retracing), so their outputs may carry no
    # static shape; layers after the encoder need `[shards, rows, units]`.
    picked.set_shape(lengths.shape.concatenate(kernel.shape[:1]))
    return picked
