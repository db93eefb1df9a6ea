"""The text LSTM's packed recurrence: phases against speed and compile time.

    python benchmarks/lstm_recurrence.py --output benchmarks/results/lstm_recurrence.md
    python benchmarks/lstm_recurrence.py --groups 1 2 4 --batch-sizes 64 --rounds 31

`LSTMEncoder`'s XLA recurrence (`keras_mre/layers/_lstm_xla_kernel.py`)
sorts the clips longest first and lets them leave the loop in `GROUPS`
phases of static row counts. This script times the encoder's forward pass
and gradient (one `tf.function` step, as `fit` runs it) on MOSEI text shapes
(50 x 768 features, lengths uniform in 10-50, 128 units) for several phase
counts, in interleaved rounds inside one process so that every count sees
the same machine load, and the extra compilation each count costs for a new
input shape. `--groups 1` is the loop over the whole batch at every step.
"""

import argparse
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def make_step(groups, units, batch):
    """A compiled training step of a fresh encoder using `groups` phases,
    and its first call's seconds (trace and XLA compilation)."""
    import functools

    import numpy as np
    import tensorflow as tf

    from keras_mre.layers import LSTMEncoder
    from keras_mre.layers import _lstm_xla_kernel

    rng = np.random.default_rng(batch)
    x = tf.constant(rng.standard_normal((batch, 50, 768)).astype("float32"))
    lengths = tf.constant(rng.integers(10, 51, size=batch).astype("int32"))
    encoder = LSTMEncoder(units, implementation="xla")
    encoder.build(x.shape)
    phased = functools.partial(_lstm_xla_kernel.lstm_last_state, groups=groups)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(encoder(x, lengths, training=True) ** 2)
        return [tf.reduce_sum(g) for g in tape.gradient(loss, encoder.trainable_weights)]

    def run():
        return [float(v) for v in step()]

    # The encoder calls the module's `lstm_last_state`, read when the step
    # is traced: patched for the trace only, the compiled step keeps it.
    start = time.perf_counter()
    real = _lstm_xla_kernel.lstm_last_state
    _lstm_xla_kernel.lstm_last_state = phased
    try:
        run()
    finally:
        _lstm_xla_kernel.lstm_last_state = real
    return run, time.perf_counter() - start


def measure(groups_list, batch, units, rounds, repeats):
    """{groups: (per-round ms list, first-call s)} in interleaved rounds."""
    steps, first = {}, {}
    for groups in groups_list:
        steps[groups], first[groups] = make_step(groups, units, batch)
        steps[groups]()
    times = {groups: [] for groups in groups_list}
    for _ in range(rounds):
        for groups, run in steps.items():
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            times[groups].append((time.perf_counter() - start) / repeats * 1e3)
    return {groups: (times[groups], first[groups]) for groups in groups_list}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", help="Markdown file to write")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from model_speed import write_report
    from tqdm import tqdm

    from keras_mre.layers import _lstm_xla_kernel

    lines = [
        "| batch | phases | median ms | min ms | x one phase (median) | "
        "first call s (trace + compile) |",
        "|---|---|---|---|---|---|",
    ]
    # One-time TensorFlow and Keras start-up, off the first count's compile time.
    make_step(args.groups[0], args.units, 3)
    for batch in tqdm(args.batch_sizes, desc="batch sizes"):
        results = measure(args.groups, batch, args.units, args.rounds, args.repeats)
        base = statistics.median(results[args.groups[0]][0])
        for groups, (times, first) in results.items():
            median = statistics.median(times)
            default = " (default)" if groups == _lstm_xla_kernel.GROUPS else ""
            lines.append(
                f"| {batch} | {groups}{default} | {median:.2f} | {min(times):.2f} | "
                f"{median / base:.2f} | {first:.2f} |"
            )
    write_report(
        "Text LSTM recurrence: phases of the packed loop",
        f"`LSTMEncoder({args.units}, implementation=\"xla\")`, forward and gradient "
        "of one `tf.function` step on 50 x 768 features with lengths uniform in "
        f"10-50; {args.rounds} interleaved rounds of {args.repeats} steps per "
        f"phase count; ratios against {args.groups[0]} phase(s).",
        lines,
        args.output,
    )


if __name__ == "__main__":
    main()
