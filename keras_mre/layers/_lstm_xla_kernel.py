"""XLA-compiled LSTM recurrence with a hand-written gradient (TensorFlow backend).

The training-time fast path of `LSTMEncoder` (its `implementation="xla"`,
and `"auto"` in training steps on the TensorFlow backend). This is the one
place where a layer's numerics are written in TensorFlow rather than
`keras.ops`: on CPU, a graph-mode `while` loop spends most of an LSTM step in
per-op dispatch (about 15 small ops per step forward and twice that for the
automatic gradient), and Keras has no fused CPU LSTM kernel. Compiling the
forward loop and a hand-written backward loop with XLA fuses each step's
element-wise work into one kernel; the gradient of the recurrent kernel is
one large matrix product over all steps, inside the compiled backward
function, instead of one small product per step.
`tests/layers/test_lstm_encoder.py` checks values and gradients against the
generic `keras.ops` path.

Shapes: `gates` `[time, batch, 4 * units]`, time-major (the input part
`x_t W + b` of the gates, order input, forget, output, candidate; the
encoder gathers its input rows in time-major order, so no transpose is
needed on either side of the kernel), `kernel` `[units,
4 * units]` (the recurrent kernel `U`), `lengths` `[batch]` int32 (already
clipped to `[0, time]`). `time` must be at least 1. The result is each
clip's hidden state after its step `length - 1`, `[batch, units]`, and zeros
for a clip of length 0.

Each XLA function is compiled once per input shape: with `load_dataset`'s
fixed padding that is once for full batches and once for the last one. The
loop runs over the first `max(lengths)` steps only; the trip count is a
tensor, not a shape, so it does not cause recompilation.
"""

import tensorflow as tf


def _steps_to_run(lengths, time):
    longest = tf.reduce_max(tf.concat([lengths, tf.zeros([1], lengths.dtype)], 0))
    return tf.minimum(tf.maximum(longest, 1), time)


def _forward(gates, kernel, lengths):
    # Shapes are read dynamically: with reduce_retracing, a trace may have
    # unknown dimensions (XLA still compiles each concrete shape).
    units = tf.shape(kernel)[0]
    time = tf.shape(gates)[0]
    zeros = tf.zeros([tf.shape(gates)[1], units], gates.dtype)
    last = lengths - 1

    def array():
        return tf.TensorArray(gates.dtype, size=time, element_shape=[None, None])

    def body(t, h, c, picked, hs, cs, acts):
        z = gates[t] + tf.matmul(h, kernel)
        sigmoids = tf.sigmoid(z[:, : 3 * units])
        candidate = tf.tanh(z[:, 3 * units :])
        input_gate, forget_gate, output_gate = tf.split(sigmoids, 3, axis=1)
        c = forget_gate * c + input_gate * candidate
        h = output_gate * tf.tanh(c)
        picked = tf.where((last == t)[:, None], h, picked)
        acts = acts.write(t, tf.concat([sigmoids, candidate], 1))
        return t + 1, h, c, picked, hs.write(t, h), cs.write(t, c), acts

    run = _steps_to_run(lengths, time)
    loop = (0, zeros, zeros, zeros, array(), array(), array())
    _, _, _, picked, hs, cs, acts = tf.while_loop(lambda t, *_: t < run, body, loop)
    return picked, hs.stack(), cs.stack(), acts.stack()


def _backward(d_picked, lengths, hs, cs, acts, kernel):
    time = tf.shape(hs)[0]
    c_prev = tf.concat([tf.zeros_like(cs[:1]), cs[:-1]], 0)
    zeros = tf.zeros_like(d_picked)
    last = lengths - 1
    d_gates = tf.TensorArray(hs.dtype, size=time, element_shape=[None, None])

    def body(t, dh_next, dc_next, d_gates):
        i, f, o, g = tf.split(acts[t], 4, axis=1)
        tanh_c = tf.tanh(cs[t])
        dh = dh_next + tf.where((last == t)[:, None], d_picked, zeros)
        dc = dc_next + dh * o * (1.0 - tanh_c * tanh_c)
        dz = tf.concat(
            [
                dc * g * i * (1.0 - i),
                dc * c_prev[t] * f * (1.0 - f),
                dh * tanh_c * o * (1.0 - o),
                dc * i * (1.0 - g * g),
            ],
            1,
        )
        dh_prev = tf.matmul(dz, kernel, transpose_b=True)
        return t - 1, dh_prev, dc * f, d_gates.write(t, dz)

    run = _steps_to_run(lengths, time)
    _, _, _, d_gates = tf.while_loop(
        lambda t, *_: t >= 0, body, (run - 1, zeros, zeros, d_gates)
    )
    d_gates = d_gates.stack()
    # The recurrent kernel's gradient, sum_t h_{t-1}^T dz_t, as one product
    # over all steps; unwritten steps (after max(lengths)) hold zeros.
    units = tf.shape(kernel)[0]
    h_prev = tf.concat([tf.zeros_like(hs[:1]), hs[:-1]], 0)
    d_kernel = tf.matmul(
        tf.reshape(h_prev, [-1, units]),
        tf.reshape(d_gates, [-1, 4 * units]),
        transpose_a=True,
    )
    return d_gates, d_kernel


_forward_xla = tf.function(
    _forward, jit_compile=True, autograph=False, reduce_retracing=True
)
_backward_xla = tf.function(
    _backward, jit_compile=True, autograph=False, reduce_retracing=True
)


def lstm_last_state(gates, kernel, lengths):
    """Hidden state after each clip's last valid step; see the module docstring.

    `kernel` may be a variable: it is read once here, so the gradient
    reaches the variable through that read.
    """
    kernel = tf.identity(kernel)
    picked = _lstm_last_state(gates, kernel, lengths)
    # The compiled functions are traced with relaxed shapes once several
    # shapes were seen (reduce_retracing), so their outputs may carry no
    # static shape; layers after the encoder need `[batch, units]`.
    picked.set_shape(gates.shape[1:2].concatenate(kernel.shape[:1]))
    return picked


@tf.custom_gradient
def _lstm_last_state(gates, kernel, lengths):
    # The compiled functions are never differentiated themselves: without
    # stop_gradient, an eager tape would ask TensorFlow for their own
    # forward-with-side-outputs variant, which XLA cannot compile.
    gates, kernel = tf.stop_gradient(gates), tf.stop_gradient(kernel)
    picked, hs, cs, acts = _forward_xla(gates, kernel, lengths)

    def grad(d_picked):
        d_picked = tf.stop_gradient(d_picked)
        d_gates, d_kernel = _backward_xla(d_picked, lengths, hs, cs, acts, kernel)
        d_gates.set_shape(gates.shape)
        d_kernel.set_shape(kernel.shape)
        return d_gates, d_kernel, None

    return picked, grad
