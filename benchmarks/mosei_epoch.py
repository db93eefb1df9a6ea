"""End-to-end MOSEI-sized training epoch: TFRecords -> load_dataset -> MRE.

    python benchmarks/mosei_epoch.py                         # 16,326 train clips
    python benchmarks/mosei_epoch.py --train-clips 4000      # smaller, extrapolated
    python benchmarks/mosei_epoch.py --bucket-by text        # length-sorted batches
    python benchmarks/mosei_epoch.py --model mult --batch-size 4 --steps 150 \
        --bucket-by audio,vision                             # part of an epoch

Writes a simulated data set of CMU-MOSEI shapes (relevance simulator, mosei
preset: text 50x768, audio up to 500x74, vision up to 500x35) once to
`--data-dir`, then times one training epoch of a model (default MRE, batch
64) read through `keras_mre.data.load_dataset`, after a short warm-up fit
that traces the training step. Reports seconds per epoch, clips/s, the
epoch time extrapolated to 16,326 clips, and the process' peak RSS.
`--bucket-by` passes `load_dataset`'s `bucket_by`; `--steps` times only the
epoch's first steps (for slow models) and extrapolates to the whole epoch.
"""

import argparse
import datetime
import os
import pathlib
import resource
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
MOSEI_TRAIN_CLIPS = 16326


def ensure_data(path, train_clips=MOSEI_TRAIN_CLIPS):
    """Writes the mosei-preset simulator set at `path` unless it is there
    with `train_clips` training clips and stored frame means; returns the
    seconds spent writing, or None."""
    from keras_mre_pipelines import synth

    from keras_mre import data

    existing = None
    if (path / "dataset.json").exists():
        cached = data.load_info(path)
        # Data sets written before the records held frame means are rewritten.
        existing = cached.splits.get("train") if cached.frame_means else None
    if existing == train_clips:
        return None
    start = time.perf_counter()
    synth.synthesize(
        path,
        preset="mosei",
        seed=0,
        num_clips={"train": train_clips, "valid": 1, "test": 1},
        overwrite=True,
    )
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(pathlib.Path.home() / ".cache" / "keras-mre-bench" / "sim-mosei"))
    parser.add_argument("--train-clips", type=int, default=MOSEI_TRAIN_CLIPS)
    parser.add_argument("--model", default="mre")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bucket-by", default=None,
                        help="comma-separated modalities: load_dataset(bucket_by=...)")
    parser.add_argument("--steps", type=int, default=None,
                        help="time only this many steps of the epoch and extrapolate")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "mosei_epoch.md"))
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import model_speed

    import keras_mre
    from keras_mre import data

    path = pathlib.Path(args.data_dir)
    write_seconds = ensure_data(path, args.train_clips)
    info = data.load_info(path)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    model = keras_mre.build_model(
        args.model,
        feature_dims=dict(info.feature_dims),
        num_classes=len(info.class_names),
        batch_size=args.batch_size,
    )
    # As `keras_mre.train` reads it: frame-mean modalities pooled once per clip.
    pool = model.pooled_modalities()
    bucket_by = args.bucket_by.split(",") if args.bucket_by else None
    train = data.load_dataset(
        path, "train", batch_size=args.batch_size, seed=0, pool=pool, bucket_by=bucket_by
    )
    start = time.perf_counter()
    model.fit(train.take(3), epochs=1, verbose=0)
    warmup = time.perf_counter() - start
    steps = int(train.cardinality())
    timed = min(args.steps or steps, steps)
    start = time.perf_counter()
    model.fit(train, epochs=1, steps_per_epoch=timed, verbose=1)
    epoch = (time.perf_counter() - start) * steps / timed
    clips = info.splits["train"]
    # The targets are MRE's at batch 64.
    targets = args.model == "mre" and args.batch_size == 64
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    lines = [
        "# End-to-end MOSEI-sized epoch",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {model_speed.machine()}",
        f"- Versions: {model_speed.versions()}",
        f"- Command: `{' '.join(['python'] + sys.argv)}`",
        f"- Data: simulator mosei preset, {clips} train clips, {size / 1e9:.2f} GB on disk"
        + (f", written in {write_seconds:.0f} s" if write_seconds else " (written earlier)"),
        f"- Model: {args.model}, batch {args.batch_size}, read through `load_dataset`"
        + (f" with `pool={list(pool)}` (as `keras_mre.train` does)" if pool else "")
        + (f", `bucket_by={bucket_by}`" if bucket_by else ""),
        "",
        f"- Warm-up (trace + 3 steps): {warmup:.1f} s",
        (f"- Timed: the first {timed} of the epoch's {steps} steps, extrapolated"
         if timed < steps else f"- Timed: the whole epoch, {steps} steps"),
        f"- One epoch of {clips} clips: {epoch:.1f} s ({clips / epoch:.1f} clips/s)",
        f"- Extrapolated to {MOSEI_TRAIN_CLIPS} clips: {epoch * MOSEI_TRAIN_CLIPS / clips:.1f} s"
        + (" (target <= 25 s)" if targets else ""),
        f"- Peak RSS of the process: {rss_gb:.2f} GB" + (" (target <= 2 GB)" if targets else ""),
    ]
    text = "\n".join(lines) + "\n"
    pathlib.Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
