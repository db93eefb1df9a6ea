"""Input pipeline throughput and MMSA converter memory.

Part 1 writes simulated data sets (mosei preset: text 50x768, audio 500x74,
vision 500x35; and the default sdme preset) and measures examples per second
of `keras_mre.data.load_dataset` at batch 64, shuffled, over several epochs:
wall-clock rate and the process CPU time per example (the machine is shared,
so CPU time is the steadier number).

Part 2 writes MOSEI-shaped MMSA pickles (float64, the real file's shapes,
a fraction of its clips) and converts each in a fresh process, recording the
converter's peak resident memory next to the pickle size.

Results go to benchmarks/results/data_throughput.md.

    python benchmarks/data_throughput.py                   # defaults below
    python benchmarks/data_throughput.py --clips 3000 --mmsa-fractions 0.0625 0.125
"""

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                       "data_throughput.md")
MOSEI_SPLITS = {"train": 16326, "valid": 1871, "test": 4659}
MOSEI_SHAPES = {"text": (50, 768), "audio": (500, 74), "vision": (500, 35)}


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure_pipeline(path, batch_size, epochs, **kwargs):
    from keras_mre import data

    ds = data.load_dataset(path, "train", batch_size, seed=0, **kwargs)
    rows = []
    for epoch in range(epochs):
        start, cpu = time.perf_counter(), cpu_seconds()
        count = 0
        for _, labels in ds:
            count += int(labels["emotion"].shape[0])
        wall = time.perf_counter() - start
        rows.append({"epoch": epoch + 1, "clips": count, "wall_s": wall,
                     "per_s": count / wall, "cpu_s": cpu_seconds() - cpu})
    return rows


def measure_fit(path, info, args):
    """Samples/s of one training epoch fed by load_dataset and by numpy arrays."""
    import numpy as np

    import keras_mre
    from keras_mre import data

    model = keras_mre.build_model(args.fit_model, feature_dims=info.feature_dims,
                                  num_classes=info.num_classes)
    pool = model.pooled_modalities()  # as keras_mre.train reads the data
    streamed = data.load_dataset(path, "train", args.batch_size, seed=0, pool=pool)
    features, labels = {}, {}
    for x, y in data.load_dataset(path, "train", 256, shuffle=False, pool=pool):
        for key, value in x.items():
            features.setdefault(key, []).append(value.numpy())
        for key, value in y.items():
            labels.setdefault(key, []).append(value.numpy())
    features = {k: np.concatenate(v) for k, v in features.items()}
    labels = {k: np.concatenate(v) for k, v in labels.items()}
    count = len(labels["emotion"])
    model.fit(streamed.take(3), epochs=1, verbose=0)
    result = {}
    for name, kwargs in (("load_dataset", {"x": streamed}),
                         ("numpy arrays", {"x": features, "y": labels,
                                           "batch_size": args.batch_size})):
        start = time.perf_counter()
        model.fit(epochs=1, verbose=0, **kwargs)
        result[name] = count / (time.perf_counter() - start)
    return result


def throughput(args, workdir):
    import tensorflow as tf

    from keras_mre_pipelines import synth

    tf.io.TFRecordWriter(os.devnull).close()

    sections = []
    for preset, clips in (("mosei", args.clips), ("sdme", args.sdme_clips)):
        path = os.path.join(workdir, preset)
        start = time.perf_counter()
        info = synth.synthesize(path, preset=preset, seed=0,
                                num_clips={"train": clips, "valid": 0, "test": 0},
                                shard_size=args.shard_size, overwrite=True, progress=False)
        write_s = time.perf_counter() - start
        size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))
        stored_kb = size / clips / 1024
        padded_kb = sum(info.max_lengths[m] * d * 4 for m, d in info.feature_dims.items()) / 1024
        runs = {"streamed": measure_pipeline(path, args.batch_size, args.epochs),
                "streamed, pool=[audio, vision]": measure_pipeline(
                    path, args.batch_size, args.epochs, pool=["audio", "vision"]),
                "cache=True": measure_pipeline(path, args.batch_size, args.epochs, cache=True)}
        fit = measure_fit(path, info, args) if args.fit_model != "none" else {}
        sections.append({"preset": preset, "clips": clips, "write_s": write_s,
                         "stored_kb": stored_kb, "padded_kb": padded_kb, "runs": runs,
                         "fit": fit,
                         "dims": dict(info.feature_dims), "max_lengths": dict(info.max_lengths)})
        shutil.rmtree(path)
    return sections


_MAKE_PICKLE = """
import pickle, sys, numpy as np
path, fraction = sys.argv[1], float(sys.argv[2])
splits = {splits}
shapes = {shapes}
rng = np.random.default_rng(0)
content = {{"config": {{"source": "benchmark"}}}}
for split, full in splits.items():
    n = max(1, int(round(full * fraction)))
    d = {{}}
    for m, (t, dim) in shapes.items():
        d[m] = rng.standard_normal((n, t, dim))
    d["audio"][:, :, 0] = -np.inf
    d["audio_lengths"] = list(rng.integers(100, 501, size=n))
    d["vision_lengths"] = list(rng.integers(100, 501, size=n))
    mask = (np.arange(50)[None, :] < rng.integers(10, 51, size=n)[:, None]).astype(float)
    d["text_bert"] = np.stack([mask, mask, 0 * mask], axis=1)
    d["regression_labels"] = rng.uniform(-3, 3, size=n).round(1)
    d["id"] = np.array([f"{{split}}_{{i}}" for i in range(n)], dtype=object)
    content[split] = d
with open(path, "wb") as f:
    pickle.dump(content, f, protocol=4)
"""

_CONVERT = """
import json, os, sys, threading, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import psutil
import tensorflow as tf
from keras_mre_pipelines import mmsa
process = psutil.Process()
tf.io.TFRecordWriter(os.devnull).close()
base = process.memory_info().rss
peak = [base]
done = threading.Event()
def sample():
    while not done.wait(0.02):
        peak[0] = max(peak[0], process.memory_info().rss)
thread = threading.Thread(target=sample)
thread.start()
start = time.perf_counter()
info = mmsa.convert_mmsa(sys.argv[1], sys.argv[2], task="binary", progress=False)
seconds = time.perf_counter() - start
done.set()
thread.join()
print(json.dumps({"clips": info.num_clips, "seconds": seconds,
                  "base_mb": base / 2**20, "peak_mb": peak[0] / 2**20}))
"""


def converter_memory(args, workdir):
    rows = []
    for fraction in args.mmsa_fractions:
        pkl = os.path.join(workdir, f"mosei-{fraction}.pkl")
        out = os.path.join(workdir, f"mosei-{fraction}")
        subprocess.run([sys.executable, "-c", _MAKE_PICKLE.format(
            splits=repr(MOSEI_SPLITS), shapes=repr(MOSEI_SHAPES)), pkl, str(fraction)],
            check=True)
        done = subprocess.run([sys.executable, "-c", _CONVERT, pkl, out], check=True,
                              capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result.update(fraction=fraction, pickle_mb=os.path.getsize(pkl) / 2**20)
        rows.append(result)
        os.remove(pkl)
        shutil.rmtree(out)
    return rows


def versions():
    import numpy
    import tensorflow as tf

    return f"Python {platform.python_version()}, TensorFlow {tf.__version__}, numpy {numpy.__version__}"


def machine():
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} CPU cores ({cpu}), {memory:.0f} GiB RAM, {platform.system()} {platform.release()}"


def report(args, sections, memory, load_before, load_after, command):
    lines = [
        "# Data pipeline throughput and MMSA converter memory",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"- Machine: {machine()}",
        f"- Versions: {versions()}",
        f"- Load average (1 min) before / after: {load_before:.1f} / {load_after:.1f} "
        "(the machine is shared; wall-clock rates fall with load, CPU time per clip does not)",
        f"- Command: `{command}`",
        "",
        "## tf.data examples per second (`load_dataset(..., 'train', batch_size="
        f"{args.batch_size}, seed=0)`, shuffled)",
        "",
        "Rates are clips per wall-clock second; `CPU ms/clip` is the process CPU time "
        "(all threads) per clip, and `clips per CPU-s` its inverse: what one core delivers.",
        "",
    ]
    for s in sections:
        shapes = ", ".join(f"{m} {s['max_lengths'][m]}x{d}" for m, d in s["dims"].items())
        lines += [
            f"### preset `{s['preset']}`: {s['clips']} clips, max {shapes}",
            "",
            f"Stored {s['stored_kb']:.0f} KB per clip (valid frames only), padded batch "
            f"{s['padded_kb']:.0f} KB per clip; writing took {s['write_s']:.1f} s "
            f"({s['clips'] / s['write_s']:.0f} clips/s).",
            "",
            "| pipeline | epoch | clips/s (wall) | CPU ms/clip | clips per CPU-s |",
            "|---|---|---|---|---|",
        ]
        for name, rows in s["runs"].items():
            for r in rows:
                lines.append(f"| {name} | {r['epoch']} | {r['per_s']:.0f} | "
                             f"{1000 * r['cpu_s'] / r['clips']:.2f} | {r['clips'] / r['cpu_s']:.0f} |")
        lines.append("")
        if s["fit"]:
            best = max(r["per_s"] for r in s["runs"]["streamed, pool=[audio, vision]"])
            lines += [
                f"Training `{args.fit_model}` for one epoch (batch {args.batch_size}, "
                "audio and vision pooled in the pipeline as `keras_mre.train` does): "
                + ", ".join(f"fed by {k} {v:.0f} samples/s" for k, v in s["fit"].items())
                + f". The pooled streamed pipeline alone delivers "
                f"{best / s['fit']['load_dataset']:.1f}x the training rate (best epoch, wall "
                "clock, same machine).",
                "",
            ]
    if memory:
        lines += [
            "## MMSA converter peak memory (MOSEI-shaped float64 pickles, protocol 4)",
            "",
            "Each conversion runs in a fresh process. RSS is sampled every 20 ms: `before` "
            "after importing TensorFlow and the converter, `peak` the most seen while "
            "converting, `growth` their difference.",
            "",
            "| fraction of MOSEI | clips | pickle MB | convert s | RSS before MB | peak RSS MB "
            "| growth MB |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in memory:
            lines.append(f"| {r['fraction']} | {r['clips']} | {r['pickle_mb']:.0f} | "
                         f"{r['seconds']:.1f} | {r['base_mb']:.0f} | {r['peak_mb']:.0f} | "
                         f"{r['peak_mb'] - r['base_mb']:.0f} |")
        lines.append("")
        if len(memory) >= 2:
            import numpy as np

            sizes = np.array([r["pickle_mb"] for r in memory])
            growth = np.array([r["peak_mb"] - r["base_mb"] for r in memory])
            slope, intercept = np.polyfit(sizes, growth, 1)
            full_mb = sizes[-1] / memory[-1]["fraction"]
            lines += [
                f"Growth rises by {slope * 1024:.0f} MB per GB of pickle (least squares). "
                f"Extrapolated to the whole MOSEI pickle of this layout ({full_mb / 1024:.1f} GB): "
                f"growth {intercept + slope * full_mb:.0f} MB, peak RSS about "
                f"{memory[-1]['base_mb'] + intercept + slope * full_mb:.0f} MB. "
                "Loading the same file with `pickle.load` needs at least its size in memory.",
                "",
            ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=3000, help="mosei-preset clips")
    parser.add_argument("--sdme-clips", type=int, default=2567, help="sdme-preset clips")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=500)
    parser.add_argument("--fit-model", default="mre",
                        help="model trained for the input-vs-training comparison ('none' to skip)")
    parser.add_argument("--mmsa-fractions", type=float, nargs="*", default=[0.03125, 0.0625, 0.125],
                        help="MOSEI fractions for the converter memory run (none to skip)")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a temp dir)")
    parser.add_argument("--results", default=RESULTS)
    args = parser.parse_args()
    command = "python benchmarks/data_throughput.py " + " ".join(sys.argv[1:])
    workdir = args.workdir or tempfile.mkdtemp(prefix="keras-mre-bench-")
    os.makedirs(workdir, exist_ok=True)
    load_before = os.getloadavg()[0]
    try:
        sections = throughput(args, workdir)
        memory = converter_memory(args, workdir) if args.mmsa_fractions else []
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    text = report(args, sections, memory, load_before, os.getloadavg()[0], command.strip())
    os.makedirs(os.path.dirname(args.results), exist_ok=True)
    with open(args.results, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
