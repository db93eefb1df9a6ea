"""Where an MRE training step spends its time on MOSEI shapes, against LMF.

    python benchmarks/mre_step_profile.py
    python benchmarks/mre_step_profile.py --batch-sizes 32 64 --rounds 7 --epoch-clips 2048

Part 1 times the compiled training step (what `Model.fit` runs per batch,
`model_speed.fit_step`, on one in-memory random batch of MOSEI shapes:
text 50x768, audio 500x74, vision 500x35, zero-padded with random
lengths) of MRE (default: the text LSTM's XLA kernel), of MRE with the
generic `keras.ops` LSTM (`lstm_implementation="generic"`), of MRE
compiled whole with XLA (`jit_compile=True`), of MRE without its text LSTM
(`sequence_modalities=[]`, i.e. everything else of the step) and of our LMF.
Models are built once and timed in alternating rounds in one process; each
round runs `--steps` steps per model and the median over rounds is reported,
because the machine is shared and single rounds vary a lot.

Part 2 splits the text `LSTMEncoder` (forward and gradient, inside
`tf.function`, training mode) into its input projection and its
step-by-step recurrence, for both implementations.

Part 3 (unless `--epoch-clips 0`) writes a simulated mosei-preset data set
of that many training clips and times one MRE epoch read through
`keras_mre.data.load_dataset` at batch 64, extrapolated linearly to
MOSEI's 16,326 training clips.

With `--trace DIR`, Part 4 records `--trace-steps` MRE training steps at
batch 32 with TensorFlow's profiler into DIR (open it with TensorBoard's
Profile tab, `tensorboard --logdir DIR`, which needs the
`tensorboard-plugin-profile` package) and tabulates the op CPU time per step
by model part, read from the trace itself.

Results are printed and written as Markdown to `--output`.
"""

import argparse
import datetime
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
MOSEI_TRAIN_CLIPS = 16326


def build(name, jit_compile=False, **overrides):
    import keras_mre
    from keras_mre.optimizers import FusedAdam
    from model_speed import MOSEI_FEATURE_DIMS

    model = keras_mre.build_model(
        name,
        feature_dims=MOSEI_FEATURE_DIMS,
        num_classes=2,
        compile=False,
        seed=0,
        **overrides,
    )
    # The optimizer of build_model(compile=True).
    model.compile(optimizer=FusedAdam(1e-3), jit_compile=jit_compile)
    return model


def alternate(functions, rounds, steps, progress):
    """Median ms per call of each function, timed in alternating rounds."""
    times = {name: [] for name in functions}
    for _ in progress(range(rounds), desc="rounds"):
        for name, function in functions.items():
            start = time.perf_counter()
            for _ in range(steps):
                function()
            times[name].append((time.perf_counter() - start) / steps * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def step_times(batch_size, rounds, steps, progress):
    """Median training-step ms of the Part 1 variants at `batch_size`."""
    import tensorflow as tf

    from model_speed import as_trained
    from model_speed import fit_step
    from model_speed import random_mosei_batch

    features, labels = random_mosei_batch(batch_size)
    y = {k: tf.constant(v) for k, v in labels.items()}
    models = {
        "mre": build("mre"),
        "mre, generic LSTM": build("mre", lstm_implementation="generic"),
        "mre, jit_compile=True": build("mre", jit_compile=True),
        "mre without text LSTM": build("mre", sequence_modalities=[]),
        "lmf": build("lmf"),
    }
    functions = {}
    for name, model in models.items():
        # Each model gets the batch as keras_mre.train feeds it.
        x = {k: tf.constant(v) for k, v in as_trained(model, features).items()}
        functions[name] = fit_step(model, x, y)
        for _ in range(2):
            functions[name]()
    return alternate(functions, rounds, steps, progress)


def encoder_times(batch_size, rounds, steps, progress):
    """Median ms of the text encoder's parts, forward and gradient."""
    import numpy as np
    import tensorflow as tf

    from keras_mre.layers import LSTMEncoder
    from keras_mre.layers._lstm_xla_kernel import lstm_last_state
    from model_speed import random_mosei_batch

    features, _ = random_mosei_batch(batch_size)
    frames = tf.constant(features["text"])
    lengths = tf.constant(features["text_length"])
    layer = LSTMEncoder(128, implementation="generic")
    layer(frames, lengths)
    xla_layer = LSTMEncoder(128, implementation="xla")
    xla_layer(frames, lengths)
    xla_layer.set_weights(layer.get_weights())
    valid = tf.sequence_mask(lengths, frames.shape[1])
    rows = tf.boolean_mask(frames, valid)
    gates = tf.constant(
        np.random.default_rng(0).normal(
            scale=0.1, size=(int(tf.reduce_max(lengths)), batch_size, 512)
        ).astype("float32")
    )

    def with_gradient(loss_fn, weights):
        @tf.function
        def run():
            with tf.GradientTape() as tape:
                loss = loss_fn()
            return tape.gradient(loss, weights)

        return run

    # The XLA kernel lays gates out time-major (here as one shard of all
    # valid steps), the generic loop reads them batch-major.
    batch_major_gates = tf.transpose(gates, [1, 0, 2])
    all_valid = tf.fill([batch_size], tf.shape(gates)[0])
    functions = {
        "whole LSTMEncoder, generic": with_gradient(
            lambda: tf.reduce_sum(layer(frames, lengths, training=True) ** 2),
            layer.trainable_weights,
        ),
        "whole LSTMEncoder, xla": with_gradient(
            lambda: tf.reduce_sum(xla_layer(frames, lengths, training=True) ** 2),
            xla_layer.trainable_weights,
        ),
        "input projection of valid steps": with_gradient(
            lambda: tf.reduce_sum(tf.matmul(rows, layer.kernel) ** 2), [layer.kernel]
        ),
        "recurrence over max(lengths) steps, generic": with_gradient(
            lambda: tf.reduce_sum(layer.rnn(batch_major_gates)[:, -1] ** 2),
            [layer.cell.recurrent_kernel],
        ),
        "recurrence over max(lengths) steps, xla": with_gradient(
            lambda: tf.reduce_sum(
                lstm_last_state(
                    tf.reshape(gates, [-1, 512]),
                    tf.range(tf.size(gates) // 512),
                    xla_layer.cell.recurrent_kernel,
                    all_valid[None],
                    tf.shape(gates)[0],
                ) ** 2
            ),
            [xla_layer.cell.recurrent_kernel],
        ),
    }
    for function in functions.values():
        function()
    valid_fraction = float(tf.reduce_mean(tf.cast(valid, "float32")))
    return alternate(functions, rounds, steps, progress), valid_fraction


def epoch_time(clips, batch_size, workdir):
    """Seconds of one MRE epoch over `clips` simulated mosei-preset clips."""
    import keras_mre
    from mosei_epoch import ensure_data

    from keras_mre import data

    path = pathlib.Path(workdir) / "mosei"
    ensure_data(path, clips)
    info = data.load_info(path)
    model = keras_mre.build_model(
        "mre",
        feature_dims=dict(info.feature_dims),
        num_classes=len(info.class_names),
        batch_size=batch_size,
    )
    train = data.load_dataset(
        path, "train", batch_size=batch_size, seed=0, pool=model.pooled_modalities()
    )
    model.fit(train.take(3), epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(train, epochs=1, verbose=1)
    return time.perf_counter() - start


def _scope(name):
    """Model part of a traced op event `scope/.../op:Type`."""
    import re

    op, _, op_type = name.partition(":")
    parts = [re.sub(r"(_\d+)+$", "", p) for p in op.split("/")]
    gradient = parts[0] == "gradient_tape"
    if gradient:
        parts = parts[1:]
    if len(parts) >= 2 and parts[0].endswith("_model"):
        part = parts[1]
    elif len(parts) >= 2:
        part = parts[0]
    else:
        part = f"other ({op_type or op})"
    return part + (" (gradient)" if gradient else "")


def trace_profile(batch_size, steps, logdir):
    """Profiles `steps` MRE training steps into `logdir`; returns
    `[(part, ops per step, CPU ms per step)]`, largest first."""
    import collections
    import glob

    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    from model_speed import as_trained
    from model_speed import fit_step
    from model_speed import random_mosei_batch

    features, labels = random_mosei_batch(batch_size)
    model = build("mre")
    x = {k: tf.constant(v) for k, v in as_trained(model, features).items()}
    y = {k: tf.constant(v) for k, v in labels.items()}
    step = fit_step(model, x, y)
    for _ in range(3):
        step()
    tf.profiler.experimental.start(logdir)
    for _ in range(steps):
        step()
    tf.profiler.experimental.stop()
    path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
    space = xplane_pb2.XSpace.FromString(pathlib.Path(path).read_bytes())
    count, picoseconds = collections.Counter(), collections.Counter()
    for plane in space.planes:
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if name == "CpuExecutable::ExecuteAsyncOnStream":
                    part = "XLA-compiled code (the LSTM recurrence)"
                elif ":" in name and "::" not in name:  # an op, `scope/op:Type`
                    part = _scope(name)
                else:
                    continue
                count[part] += 1
                picoseconds[part] += event.duration_ps
    return [
        (part, count[part] / steps, picoseconds[part] / 1e9 / steps)
        for part, _ in picoseconds.most_common()
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="steps per model per round")
    parser.add_argument("--epoch-clips", type=int, default=2048,
                        help="simulated clips for Part 3 (0 skips it)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "mre_step_profile.md"))
    parser.add_argument("--trace", help="write a profiler trace of MRE steps here (Part 4)")
    parser.add_argument("--trace-steps", type=int, default=20)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tqdm import tqdm

    import model_speed

    load_before = os.getloadavg()
    lines = [
        "# MRE training step profile on MOSEI shapes",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {model_speed.machine()}",
        f"- Versions: {model_speed.versions()}",
        f"- Command: `{' '.join(['python'] + sys.argv)}`",
        f"- Load average (1/5/15 min) at start: {' / '.join(f'{v:.2f}' for v in load_before)}",
        f"- Timing: models built once, {args.rounds} alternating rounds of "
        f"{args.steps} steps each, median over rounds.",
        "",
        "## Part 1: training step (`fit`'s compiled step, one in-memory batch)",
        "",
        "| batch | variant | ms per step | samples/s | x our LMF step |",
        "|---|---|---|---|---|",
    ]
    for batch_size in args.batch_sizes:
        times = step_times(batch_size, args.rounds, args.steps, tqdm)
        for name, ms in times.items():
            lines.append(
                f"| {batch_size} | {name} | {ms:.1f} | {batch_size / ms * 1000:.0f} | "
                f"{ms / times['lmf']:.2f} |"
            )
    encoder, valid_fraction = encoder_times(64, args.rounds, args.steps, tqdm)
    lines += [
        "",
        "## Part 2: text LSTMEncoder, forward and gradient (training mode), batch 64",
        "",
        f"Valid text steps in the batch: {valid_fraction:.0%} of 64 x 50.",
        "",
        "| part | ms |",
        "|---|---|",
    ]
    lines += [f"| {name} | {ms:.1f} |" for name, ms in encoder.items()]
    if args.epoch_clips:
        with tempfile.TemporaryDirectory() as workdir:
            seconds = epoch_time(args.epoch_clips, 64, workdir)
        lines += [
            "",
            "## Part 3: one MRE epoch through `load_dataset`, batch 64",
            "",
            f"{args.epoch_clips} simulated mosei-preset clips: {seconds:.1f} s "
            f"({args.epoch_clips / seconds:.0f} clips/s); extrapolated linearly to "
            f"{MOSEI_TRAIN_CLIPS:,} clips: {seconds * MOSEI_TRAIN_CLIPS / args.epoch_clips:.1f} s. "
            f"Peak RSS of the whole process: "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024:.2f} GB.",
        ]
    if args.trace:
        parts = trace_profile(32, args.trace_steps, args.trace)
        lines += [
            "",
            f"## Part 4: op CPU time of an MRE step by model part, batch 32 (profiler trace in `{args.trace}`)",
            "",
            f"{args.trace_steps} traced steps. CPU time is summed over TensorFlow's "
            "inter-op threads, so with two threads it can exceed the step's wall time; "
            "ops that ran inside the XLA-compiled loop count in its row.",
            "",
            "| part | ops per step | CPU ms per step |",
            "|---|---|---|",
        ]
        lines += [f"| {part} | {ops:.0f} | {ms:.2f} |" for part, ops, ms in parts if ms >= 0.05]
    load_after = os.getloadavg()
    lines.insert(
        7, f"- Load average (1/5/15 min) at end: {' / '.join(f'{v:.2f}' for v in load_after)}"
    )
    text = "\n".join(lines) + "\n"
    print(text)
    pathlib.Path(args.output).write_text(text)


if __name__ == "__main__":
    main()
