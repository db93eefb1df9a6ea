"""Epoch-start stalls: discarding a partly read `load_dataset` iterator.

    python benchmarks/iterator_teardown.py --epochs 6

`Model.fit` on a data set of known size stops each epoch after the last
batch, without reading the iterator to its end, and opens a new iterator
for the next epoch; the old one is destroyed then. This script does the
same by hand on the mosei-preset simulator set (the one
`benchmarks/mosei_epoch.py` writes): per epoch it opens an iterator, reads
exactly `cardinality` batches as fast as the pipeline gives them (no
training), and times the destruction of the iterator before the next one
opens. Both settings of `load_dataset(autotune=...)` are timed in
alternating epochs, in one process. Results are printed and written as
Markdown to `--output`.
"""

import argparse
import datetime
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=str(pathlib.Path.home() / ".cache" / "keras-mre-bench" / "sim-mosei"))
    parser.add_argument("--epochs", type=int, default=6, help="epochs per setting")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "iterator_teardown.md"))
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import model_speed
    from mosei_epoch import ensure_data

    from keras_mre import data

    path = pathlib.Path(args.data_dir)
    ensure_data(path)
    pipelines = {
        setting: data.load_dataset(
            path, "train", batch_size=args.batch_size, seed=0,
            pool=["audio", "vision"], autotune=setting,
        )
        for setting in (False, True)
    }
    batches = int(pipelines[False].cardinality())
    teardown = {False: [], True: []}
    epoch = {False: [], True: []}
    iterators = {False: None, True: None}
    for index in range(args.epochs):
        for setting, pipeline in pipelines.items():
            start = time.perf_counter()
            iterators[setting] = None  # destroys last epoch's iterator
            middle = time.perf_counter()
            iterator = iter(pipeline)
            for _ in range(batches):
                next(iterator)
            iterators[setting] = iterator
            end = time.perf_counter()
            if index:  # the first epoch has nothing to destroy
                teardown[setting].append(middle - start)
            epoch[setting].append(end - middle)
            print(f"autotune={setting} epoch {index}: teardown {middle - start:.2f} s, "
                  f"read {end - middle:.2f} s", flush=True)

    def seconds(values):
        return ", ".join(f"{v:.2f}" for v in values)

    lines = [
        "# Discarding a partly read iterator (epoch-start stalls)",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {model_speed.machine()}",
        f"- Versions: {model_speed.versions()}",
        f"- Command: `{' '.join(['python'] + sys.argv)}`",
        f"- Data: `{path.name}` ({batches} batches of {args.batch_size}), "
        "audio and vision read as stored means (`pool`)",
        "",
        "| `load_dataset(autotune=...)` | teardown s, median / max | teardowns over 0.5 s | read s per epoch, median |",
        "|---|---|---|---|",
    ]
    for setting in (False, True):
        slow = sum(t > 0.5 for t in teardown[setting])
        lines.append(
            f"| {setting} | {statistics.median(teardown[setting]):.2f} / "
            f"{max(teardown[setting]):.2f} | {slow} of {len(teardown[setting])} | "
            f"{statistics.median(epoch[setting]):.2f} |"
        )
    lines += [
        "",
        f"- teardown, autotune=False: {seconds(teardown[False])}",
        f"- teardown, autotune=True: {seconds(teardown[True])}",
        f"- read, autotune=False: {seconds(epoch[False])}",
        f"- read, autotune=True: {seconds(epoch[True])}",
    ]
    text = "\n".join(lines) + "\n"
    pathlib.Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
