"""Training speed of every registered model on CMU-MOSEI shapes (Table 4).

    python benchmarks/model_speed.py --batch-size 64 --seconds 10

Each model trains on one random batch of MOSEI shapes (text 50x768, audio
500x74, vision 500x35, zero-padded with random lengths) held in memory, so
the numbers are the cost of the compiled training step alone, without input
reading; a step is what `Model.fit` runs per batch (`fit_step`). Each
model gets the batch as `keras_mre.train` feeds it: the
modalities of `model.pooled_modalities()` (audio and vision of MRE, LMF and
TFN) averaged once per clip, `load_dataset(pool=...)`. Seconds per epoch
are `16326 / samples_per_s` (MOSEI's training split). Results are printed
and, with `--output`, written as Markdown.
"""

import argparse
import datetime
import os
import pathlib
import platform
import sys
import time

MOSEI_TRAIN_CLIPS = 16326
MOSEI_FEATURE_DIMS = {"text": 768, "audio": 74, "vision": 35}
MOSEI_LENGTHS = {"text": 50, "audio": 500, "vision": 500}
DEFAULT_MODELS = ("mre", "lmf", "tfn", "ef_lstm", "mfn", "graph_mfn", "misa", "mult")


def random_mosei_batch(batch_size, num_classes=2, seed=0):
    """`(features, labels)` numpy dicts of MOSEI shapes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    features = {}
    for modality, dim in MOSEI_FEATURE_DIMS.items():
        steps = MOSEI_LENGTHS[modality]
        lengths = rng.integers(steps // 5, steps + 1, size=batch_size).astype("int32")
        frames = rng.standard_normal((batch_size, steps, dim)).astype("float32")
        frames *= np.arange(steps)[None, :, None] < lengths[:, None, None]
        features[modality] = frames
        features[f"{modality}_length"] = lengths
    label = rng.integers(0, num_classes, size=batch_size).astype("int32")
    labels = {"emotion": label}
    for modality in MOSEI_FEATURE_DIMS:
        labels[f"emotion_{modality}"] = label
    return features, labels


def as_trained(model, features):
    """`features` as `keras_mre.train` feeds `model`: its pooled modalities
    averaged over their valid frames once per clip."""
    from vs_mmsa import pool_frames

    return pool_frames(features, model.pooled_modalities())


def fit_step(model, x, y):
    """A function running one training step of `model` on `(x, y)` as
    `Model.fit` does per batch: the compiled `model.train_function` on the
    batch, then the loss read back (what a PyTorch loop's `loss.item()`
    does). `Model.train_on_batch` would also reset every metric and convert
    all logs on each call, work `fit` does once per epoch."""
    model.make_train_function()

    def step():
        logs = model.train_function(iter(((x, y),)))
        return float(logs["loss"])

    return step


def measure(model_name, batch_size=64, seconds=10.0, warmup=2, num_classes=2, **overrides):
    """Training samples/s of `model_name` on MOSEI shapes.

    Returns:
        dict with `samples_per_s`, `steps`, `seconds`, `compile_seconds`
        (build, trace and the warm-up steps) and `params`.
    """
    import tensorflow as tf

    import keras_mre

    features, labels = random_mosei_batch(batch_size, num_classes)
    start = time.perf_counter()
    model = keras_mre.build_model(
        model_name,
        feature_dims=MOSEI_FEATURE_DIMS,
        num_classes=num_classes,
        batch_size=batch_size,
        **overrides,
    )
    x = {k: tf.constant(v) for k, v in as_trained(model, features).items()}
    y = {k: tf.constant(v) for k, v in labels.items()}
    step = fit_step(model, x, y)
    for _ in range(warmup):
        step()
    compile_seconds = time.perf_counter() - start
    steps, start = 0, time.perf_counter()
    while True:
        step()
        steps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and steps >= 2:
            break
    return {
        "samples_per_s": batch_size * steps / elapsed,
        "steps": steps,
        "seconds": elapsed,
        "compile_seconds": compile_seconds,
        "params": model.count_params(),
    }


def machine():
    """One line: CPU model, logical cores, OS."""
    cpu = platform.machine()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    line = f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"
    return line + f"; TensorFlow threads {tensorflow_threads()}"


def tensorflow_threads():
    """`intra N / inter M` as configured by tf.config or the TF_NUM_*THREADS
    environment variables ("default": TensorFlow's choice, all cores)."""
    import tensorflow as tf

    intra = tf.config.threading.get_intra_op_parallelism_threads() or os.environ.get(
        "TF_NUM_INTRAOP_THREADS", "default"
    )
    inter = tf.config.threading.get_inter_op_parallelism_threads() or os.environ.get(
        "TF_NUM_INTEROP_THREADS", "default"
    )
    return f"intra {intra} / inter {inter}"


def versions():
    """One line: Python, TensorFlow, Keras, keras-mre versions."""
    import keras
    import tensorflow as tf

    import keras_mre

    return (
        f"python {platform.python_version()}, tensorflow {tf.__version__}, "
        f"keras {keras.__version__}, keras-mre {keras_mre.__version__}"
    )


def write_report(title, setting, lines, output=None):
    """Prints and writes (to `output`, when given) a Markdown report: the
    title, date, machine, versions, exact command and `setting` (one line
    on what was timed), then `lines`."""
    header = [
        f"# {title}",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine()}",
        f"- Versions: {versions()}",
        f"- Command: `{' '.join(['python'] + sys.argv)}`",
        f"- {setting}",
        "",
    ]
    text = "\n".join(header + lines) + "\n"
    print(text)
    if output:
        pathlib.Path(output).write_text(text)


def speed_table(models, batch_size, seconds, progress=True):
    """Markdown rows of Table 4 for `models`; returns (lines, results)."""
    from tqdm import tqdm

    results = {}
    for name in tqdm(models, desc="Table 4 speed", disable=not progress):
        results[name] = measure(name, batch_size=batch_size, seconds=seconds)
    lines = [
        "| model | params | samples/s | s per MOSEI epoch (16,326 clips) | "
        "build + trace + warm-up s |",
        "|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['params']:,} | {r['samples_per_s']:.1f} | "
            f"{MOSEI_TRAIN_CLIPS / r['samples_per_s']:.1f} | {r['compile_seconds']:.1f} |"
        )
    return lines, results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--output", help="Markdown file to write")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    lines, _ = speed_table(args.models, args.batch_size, args.seconds)
    write_report(
        "Training speed on MOSEI shapes",
        f"Batch {args.batch_size}, one in-memory batch, >= {args.seconds} s timed per model.",
        lines,
        args.output,
    )


if __name__ == "__main__":
    main()
