"""Latency of an exported MRE model: in-process SavedModel call vs gRPC.

Trains a small MRE run on simulated data of a preset's shapes (or uses
`--run`), exports it, and times `serving_default` called directly on the
loaded SavedModel and through `keras_mre.serving.PredictionClient` against an
in-process `LocalPredictionServer` (gRPC over 127.0.0.1), for batch sizes 1
and 32. `--one-core` pins the process to one CPU and runs TensorFlow with one
thread (the serving target: batch 1 in <= 5 ms median on one core).

    python benchmarks/serving_latency.py [--run RUN] [--repeats 50]
        [--preset sdme|mosei] [--one-core] [--output FILE]
"""

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

RESULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "serving_latency.md")


_TRAIN = """
import sys
from keras_mre import training
from keras_mre_pipelines import synth
data_dir, run_dir, preset = sys.argv[1:]
synth.synthesize(data_dir, preset=preset, num_clips=300, seed=0, progress=False)
training.train(data_dir, run_dir, epochs=1, histogram_freq=0, verbose=0)
"""


def _features(info, batch, rng):
    features = {}
    for m in info.modalities:
        frames = info.max_lengths[m]
        features[m] = rng.normal(size=(batch, frames, info.feature_dims[m])).astype(np.float32)
        features[f"{m}_length"] = np.full(batch, frames, np.int32)
    return features


def _time(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return np.percentile(times, 50), np.percentile(times, 95)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="existing run directory (default: train one)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--preset", default="sdme", help="synth preset of the trained run's data")
    parser.add_argument("--one-core", action="store_true",
                        help="pin to one CPU and run TensorFlow with one thread")
    parser.add_argument("--output", default=RESULT)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.one_core:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    import tensorflow as tf

    if args.one_core:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)

    from keras_mre import data
    from keras_mre import export
    from keras_mre import serving
    from keras_mre import training

    work = tempfile.mkdtemp(prefix="serving-latency-")
    run_dir = args.run
    if run_dir is None:
        # Synthesis and training run in a child process, so that this one
        # holds only the loaded SavedModel (and no idle training threads
        # share the pinned core).
        data_dir = os.path.join(work, "data")
        run_dir = os.path.join(work, "run")
        subprocess.run([sys.executable, "-c", _TRAIN, data_dir, run_dir, args.preset], check=True)
    run = training.load_run(run_dir)
    info = data.load_info(run.data_dir)
    version_dir = export.export_saved_model(run_dir, os.path.join(work, "export"), verbose=False)
    signature = export.load_exported(version_dir)
    rng = np.random.default_rng(0)

    batches = {batch: _features(info, batch, rng) for batch in (1, 32)}
    direct = {}
    for batch, features in batches.items():  # in process, before the server starts
        tensors = {k: tf.constant(v) for k, v in features.items()}
        direct[batch] = _time(lambda: signature(**tensors), args.repeats)
    rows = []
    with serving.LocalPredictionServer(os.path.dirname(version_dir), "mre") as server:
        with serving.PredictionClient(server.target, "mre", timeout=60) as client:
            for batch, features in batches.items():
                remote = _time(lambda: client.predict(features), args.repeats)
                request_kb = sum(v.nbytes for v in features.values()) / 1024
                rows.append((batch, request_kb, direct[batch], remote))
                print(f"batch {batch}: in-process p50 {direct[batch][0]:.1f} ms, "
                      f"gRPC p50 {remote[0]:.1f} ms")

    load = os.getloadavg()[0]
    cores = (
        "pinned to 1 CPU, TensorFlow 1 intra-op / 1 inter-op thread"
        if args.one_core else "TensorFlow default threads"
    )
    lines = [
        "# Serving latency of an exported MRE model",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {platform.machine()}, {os.cpu_count()} logical CPUs, {platform.platform()}; "
        f"load average (1 min) at the end {load:.1f}; {cores}",
        f"- Versions: Python {platform.python_version()}, TensorFlow {tf.__version__}",
        f"- Command: `{' '.join(['python'] + sys.argv)}`",
        f"- Model: MRE, {info.name} shapes (text {info.max_lengths['text']}x{info.feature_dims['text']}, "
        + ", ".join(f"{m} {info.max_lengths[m]}x{info.feature_dims[m]}" for m in info.modalities
                    if m != "text")
        + "), every clip at its maximum length",
        f"- {args.repeats} timed calls after one warm-up; gRPC = `PredictionClient.predict` "
        "(validation, proto conversion, 127.0.0.1 round trip, server-side SavedModel call)",
        "",
        "| batch | request (KB) | in-process p50 (ms) | in-process p95 (ms) | gRPC p50 (ms) | gRPC p95 (ms) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for batch, kb, direct, remote in rows:
        lines.append(f"| {batch} | {kb:.0f} | {direct[0]:.1f} | {direct[1]:.1f} | "
                     f"{remote[0]:.1f} | {remote[1]:.1f} |")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"written {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
