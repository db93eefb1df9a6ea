"""The text LSTM's packed recurrence: phases and shards against speed and compile time.

    python benchmarks/lstm_recurrence.py --output benchmarks/results/lstm_recurrence.md
    python benchmarks/lstm_recurrence.py --groups 2 --shards 1 2 4 \
        --output benchmarks/results/lstm_recurrence_shards.md

`LSTMEncoder`'s XLA recurrence (`keras_mre/layers/_lstm_xla_kernel.py`)
cuts the batch into shards that run as independent loops at once, sorts
each shard's clips longest first and lets them leave the loop in `GROUPS`
phases of static row counts. This script times the encoder's forward pass
and gradient (one `tf.function` step, as `fit` runs it) on MOSEI text shapes
(50 x 768 features, lengths uniform in 10-50, 128 units) for every
combination of the given phase and shard counts, in interleaved rounds
inside one process so that every variant sees the same machine load, and
the extra compilation each costs for a new input shape. `--groups 1` is the
loop over the whole shard at every step, `--shards 1` the whole batch in
one loop. Without `--shards`, the encoder's own choice for the batch
(`shards_for`) is used.
"""

import argparse
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def make_step(groups, shards, units, batch):
    """A compiled training step of a fresh encoder using `groups` phases
    and `shards` shards (None: the encoder's choice), and its first call's
    seconds (trace and XLA compilation)."""
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

    # The encoder calls the module's `lstm_last_state` and `shards_for`,
    # read when the step is traced: patched for the trace only, the
    # compiled step keeps them.
    start = time.perf_counter()
    real = _lstm_xla_kernel.lstm_last_state, _lstm_xla_kernel.shards_for
    _lstm_xla_kernel.lstm_last_state = phased
    if shards is not None:
        _lstm_xla_kernel.shards_for = lambda batch: shards
    try:
        run()
    finally:
        _lstm_xla_kernel.lstm_last_state, _lstm_xla_kernel.shards_for = real
    return run, time.perf_counter() - start


def measure(variants, batch, units, rounds, repeats):
    """{(groups, shards): (per-round ms list, first-call s)} in interleaved rounds."""
    steps, first = {}, {}
    for groups, shards in variants:
        key = groups, shards
        steps[key], first[key] = make_step(groups, shards, units, batch)
        steps[key]()
    times = {key: [] for key in steps}
    for _ in range(rounds):
        for key, run in steps.items():
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            times[key].append((time.perf_counter() - start) / repeats * 1e3)
    return {key: (times[key], first[key]) for key in steps}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument(
        "--shards", type=int, nargs="+", default=None,
        help="shard counts (default: the encoder's choice for each batch)",
    )
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
        "| batch | phases | shards | median ms | min ms | x first variant (median) | "
        "first call s (trace + compile) |",
        "|---|---|---|---|---|---|---|",
    ]
    variants = [(g, s) for s in (args.shards or [None]) for g in args.groups]
    # One-time TensorFlow and Keras start-up, off the first variant's compile time.
    make_step(args.groups[0], 1, args.units, 3)
    for batch in tqdm(args.batch_sizes, desc="batch sizes"):
        results = measure(variants, batch, args.units, args.rounds, args.repeats)
        base = statistics.median(results[variants[0]][0])
        for (groups, shards), (times, first) in results.items():
            median = statistics.median(times)
            default = " (default)" if groups == _lstm_xla_kernel.GROUPS else ""
            if shards is None:
                shards_text = f"{_lstm_xla_kernel.shards_for(batch)} (default)"
            else:
                chosen = shards == _lstm_xla_kernel.shards_for(batch)
                shards_text = f"{shards}{' (default)' if chosen else ''}"
            lines.append(
                f"| {batch} | {groups}{default} | {shards_text} | {median:.2f} | "
                f"{min(times):.2f} | {median / base:.2f} | {first:.2f} |"
            )
    write_report(
        "Text LSTM recurrence: phases and shards of the packed loop",
        f"`LSTMEncoder({args.units}, implementation=\"xla\")`, forward and gradient "
        "of one `tf.function` step on 50 x 768 features with lengths uniform in "
        f"10-50; {args.rounds} interleaved rounds of {args.repeats} steps per "
        "variant; ratios against the first row of each batch size.",
        lines,
        args.output,
    )


if __name__ == "__main__":
    main()
