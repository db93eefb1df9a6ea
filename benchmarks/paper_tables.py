"""Reruns the paper's comparison (Tables 3, 4 and 5) with one command.

    python benchmarks/paper_tables.py                       # simulator (sdme preset), all tables
    python benchmarks/paper_tables.py --data data/sims data/mosei --seeds 5 --epochs 30
    python benchmarks/paper_tables.py --tables 3 5 --seeds 3 --epochs 10
    python benchmarks/paper_tables.py --tables 3 --models mre lmf --bucket-by text

- Table 3: test accuracy and weighted F1 (mean ± std over `--seeds` runs)
  of every model, on the relevance simulator's sdme preset (written once to
  `--sim-dir`, seed `--sim-seed`, unless `--no-simulator`) and on every
  converted data set given with `--data`.
- Table 5: the MRE ablation, base / +L_rs / +L_cnce / both
  (`use_rs_loss`, `use_cnce_loss`), on the same data sets and seeds.
- Table 4: training samples/s and seconds per epoch of every model on
  CMU-MOSEI shapes (see `benchmarks/model_speed.py`).

Every run trains `--epochs` epochs on the train split with the model's
default config (learning rate, batch size `--batch-size`) and is scored on
the test split after the last epoch: no early stopping, no selection on the
test split. Seeds are 1..N; the simulator is not tuned per model.
`--bucket-by` trains on length-sorted batches (`load_dataset`'s
`bucket_by`), to see what that costs in accuracy. Results go to `--output`
(Markdown) with date, machine, versions and this command.
"""

import argparse
import datetime
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

TABLE3_MODELS = ("tfn", "lmf", "ef_lstm", "mfn", "graph_mfn", "mult", "misa", "mre")
ABLATION = (
    ("Baseline", dict(use_rs_loss=False, use_cnce_loss=False)),
    ("L_rs", dict(use_rs_loss=True, use_cnce_loss=False)),
    ("L_cnce", dict(use_rs_loss=False, use_cnce_loss=True)),
    ("L_rs + L_cnce", dict(use_rs_loss=True, use_cnce_loss=True)),
)


def _mean_std(values):
    import numpy as np

    values = np.asarray(values, dtype="float64") * 100.0
    return f"{values.mean():.2f} ± {values.std():.2f}"


def build_for(path, model_name, seed, batch_size, **overrides):
    """`model_name` built with the dims and classes of the data set at `path`."""
    import keras_mre
    from keras_mre import data

    info = data.load_info(path)
    return keras_mre.build_model(
        model_name,
        feature_dims=dict(info.feature_dims),
        num_classes=len(info.class_names),
        batch_size=batch_size,
        seed=seed,
        **overrides,
    )


def train_and_score(path, model_name, seed, epochs, batch_size, bucket_by=None, **overrides):
    """Trains on `path`'s train split; returns (accuracy, weighted F1) on test."""
    from keras_mre import data

    model = build_for(path, model_name, seed, batch_size, **overrides)
    train = data.load_dataset(
        path, "train", batch_size=batch_size, seed=seed, bucket_by=bucket_by
    )
    test = data.load_dataset(path, "test", batch_size=batch_size)
    model.fit(train, epochs=epochs, verbose=0)
    scores = model.evaluate(test, verbose=0, return_dict=True)
    return scores["accuracy"], scores["f1_weighted"]


def run_grid(datasets, runs, seeds, epochs, batch_size, bucket_by=None):
    """`{(dataset, label): [(acc, f1) per seed]}` for `runs` = [(label, name, overrides)]."""
    from tqdm import tqdm

    results = {}
    total = len(datasets) * len(runs) * len(seeds)
    with tqdm(total=total, desc="training runs", unit="run") as bar:
        for dataset_name, path in datasets.items():
            for label, model_name, overrides in runs:
                scores = []
                for seed in seeds:
                    bar.set_postfix_str(f"{dataset_name} {label} seed {seed}")
                    scores.append(
                        train_and_score(
                            path, model_name, seed, epochs, batch_size, bucket_by, **overrides
                        )
                    )
                    bar.update(1)
                results[(dataset_name, label)] = scores
    return results


def table_lines(results, datasets, labels, first_column):
    header = f"| {first_column} | " + " | ".join(
        f"{d} Acc | {d} F1" for d in datasets
    ) + " |"
    lines = [header, "|---|" + "---|---|" * len(datasets)]
    for label in labels:
        cells = []
        for dataset_name in datasets:
            scores = results[(dataset_name, label)]
            cells.append(_mean_std([s[0] for s in scores]))
            cells.append(_mean_std([s[1] for s in scores]))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def simulate(sim_dir, seed, num_clips):
    from keras_mre_pipelines import synth

    sim_dir = pathlib.Path(sim_dir)
    if (sim_dir / "dataset.json").exists():
        return sim_dir
    synth.synthesize(
        sim_dir, preset="sdme", seed=seed, num_clips=num_clips, overwrite=True
    )
    return sim_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="*", default=[], help="converted data set directories")
    parser.add_argument("--no-simulator", action="store_true",
                        help="skip the simulated sdme data set")
    parser.add_argument("--sim-dir", default=str(pathlib.Path.home() / ".cache" / "keras-mre-bench" / "sim-sdme"))
    parser.add_argument("--sim-seed", type=int, default=0)
    parser.add_argument("--sim-clips", type=int, default=None,
                        help="total simulated clips (default: the sdme preset's 3667)")
    parser.add_argument("--tables", nargs="+", type=int, default=[3, 4, 5], choices=[3, 4, 5])
    parser.add_argument("--models", nargs="+", default=list(TABLE3_MODELS))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--speed-seconds", type=float, default=10.0)
    parser.add_argument("--bucket-by", default=None,
                        help="comma-separated modalities: train on length-sorted batches")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "paper_tables.md"))
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    import model_speed

    started = time.time()
    datasets = {}
    if not args.no_simulator:
        datasets["sim-sdme"] = str(simulate(args.sim_dir, args.sim_seed, args.sim_clips))
    for path in args.data:
        datasets[pathlib.Path(path).name] = path
    seeds = list(range(1, args.seeds + 1))
    bucket_by = args.bucket_by.split(",") if args.bucket_by else None
    lines = [
        "# Paper tables rerun with keras-mre",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {model_speed.machine()}",
        f"- Versions: {model_speed.versions()}",
        f"- Command: `{' '.join(['python'] + sys.argv)}`",
        f"- Data sets: " + ", ".join(f"{k} ({v})" for k, v in datasets.items()),
        f"- Protocol: {len(seeds)} seeds ({seeds[0]}..{seeds[-1]}), {args.epochs} epochs, "
        f"batch {args.batch_size}, each model's default config, scored on the "
        "test split after the last epoch (no early stopping, no model selection)"
        + (f"; training batches length-sorted (`bucket_by={bucket_by}`)." if bucket_by else "."),
        "",
    ]
    out = pathlib.Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)

    def flush(note):
        out.write_text("\n".join(lines + [note]) + "\n")

    flush("Runs in progress.")
    table3 = {}
    if 3 in args.tables and datasets:
        runs = [(name, name, {}) for name in args.models]
        results = table3 = run_grid(datasets, runs, seeds, args.epochs, args.batch_size, bucket_by)
        lines += ["## Table 3: accuracy and weighted F1 (%)", ""]
        lines += table_lines(results, datasets, args.models, "Model")
        lines.append("")
        flush("Table 5 and 4 runs in progress.")
    if 5 in args.tables and datasets:
        # MRE with both losses is its default config: reuse Table 3's runs.
        reuse = "mre" in args.models and bool(table3)
        runs = [
            (label, "mre", overrides)
            for label, overrides in ABLATION
            if not (reuse and overrides["use_rs_loss"] and overrides["use_cnce_loss"])
        ]
        results = run_grid(datasets, runs, seeds, args.epochs, args.batch_size, bucket_by)
        if reuse:
            for dataset_name in datasets:
                results[(dataset_name, ABLATION[-1][0])] = table3[(dataset_name, "mre")]
        lines += ["## Table 5: MRE ablation (%)", ""]
        lines += table_lines(results, datasets, [label for label, _ in ABLATION], "MRE losses")
        lines.append("")
        flush("Table 4 runs in progress.")
    if 4 in args.tables:
        speed, _ = model_speed.speed_table(args.models, args.batch_size, args.speed_seconds)
        lines += [
            f"## Table 4: training speed on MOSEI shapes (batch {args.batch_size})",
            "",
            "One in-memory random batch (text 50x768, audio 500x74, vision 500x35), "
            f">= {args.speed_seconds} s of compiled training steps per model.",
            "",
        ] + speed + [""]
    lines.append(f"Total wall time: {(time.time() - started) / 60:.1f} min.")
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
