"""Sweeps MRE's auxiliary-loss settings on the relevance simulator.

    python benchmarks/mre_loss_sweep.py                  # full sweep, seeds 1..3, 4 epochs
    python benchmarks/mre_loss_sweep.py --configs rs-only default --seeds 1

Why: on the simulator's sdme preset, MRE with L_rs alone beats LMF clearly,
but adding the category contrastive loss L_cnce (eq 6-7) at its defaults
(cnce_weight 1, temperature 0.1) undoes the gain (`paper_tables.md`). The
paper gives neither tau nor the loss weights, so this script varies them
(plus the learning rate and `relevance_gradient`; `default-softnorm` reruns
the defaults with the loss's earlier softened norm, `base` / `cnce-only`
the ablation without L_rs; `--configs lmf` adds LMF under the same
protocol) and records, per run:

- accuracy and weighted F1 on the VALID and the TEST split after the last
  epoch. Configurations are ranked by valid accuracy only; test scores are
  reported next to them and never used to choose.
- the last epoch's training loss terms (ce, rs, cnce as they enter eq 8);
- on the first `--probe-batches` valid batches (inference mode): the norm
  of the gradient of each loss term over all trainable weights, the cosine
  between the CE gradient and the L_cnce gradient, and the L_cnce gradient
  norm reaching the relevance head M1 (the weights that produce H);
- the relevance weights H on the whole valid split: mean per modality, and
  mean H of modalities whose unimodal label agrees with the multimodal label
  minus mean H of those that disagree (how well H finds the relevant
  modality); the mean norm of the weighted embeddings S^ that L_cnce sees.

Protocol as in `paper_tables.py`: seeds 1..N, `--epochs` epochs, batch
`--batch-size`, the sdme preset written once to `--sim-dir`. TensorFlow is
limited to `--threads` intra/inter-op threads (default 1). Results go to
`--output` (Markdown), rewritten after every configuration.
"""

import argparse
import datetime
import os
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

BOTH = dict(use_rs_loss=True, use_cnce_loss=True)
# The labels "default*" name MRE's defaults before this sweep (both losses,
# cnce_weight 1, temperature 0.1, learning rate 1e-3); they are set
# explicitly, so the runs stay the same now that the defaults are
# cnce_weight 0.3, temperature 1.0 (the sweep's choice on valid).
OLD_DEFAULTS = dict(BOTH, cnce_weight=1.0, temperature=0.1)

# (label, overrides).
CONFIGS = [("rs-only", dict(use_rs_loss=True, use_cnce_loss=False))]
for _weight in (0.1, 0.3, 1.0):
    for _tau in (0.1, 0.5, 1.0):
        _label = "default" if (_weight, _tau) == (1.0, 0.1) else f"w{_weight}-t{_tau}"
        CONFIGS.append(
            (_label, dict(BOTH, cnce_weight=_weight, temperature=_tau))
        )
CONFIGS += [
    # The loss as it was before the exact-cosine fix: x / sqrt(|x|^2 + 1e-2).
    ("default-softnorm", dict(OLD_DEFAULTS, cnce_norm="soft")),
    ("base", dict(use_rs_loss=False, use_cnce_loss=False)),
    ("cnce-only", dict(use_rs_loss=False, use_cnce_loss=True)),
    ("default-lr3e-4", dict(OLD_DEFAULTS, learning_rate=3e-4)),
    ("rs-only-lr3e-4", dict(use_rs_loss=True, use_cnce_loss=False, learning_rate=3e-4)),
    ("default-relgrad", dict(OLD_DEFAULTS, relevance_gradient=True)),
    ("rs-only-relgrad", dict(use_rs_loss=True, use_cnce_loss=False, relevance_gradient=True)),
]
# Most informative first, so that a cut-short run still answers the question.
ORDER = [
    "rs-only", "default", "default-softnorm", "w0.1-t0.1", "w0.1-t0.5", "w0.3-t0.5", "w1.0-t0.5",
    "w0.1-t1.0", "w0.3-t1.0", "w1.0-t1.0", "w0.3-t0.1",
    "default-lr3e-4", "rs-only-lr3e-4", "default-relgrad", "rs-only-relgrad",
    "base", "cnce-only",
]
CONFIGS.sort(key=lambda item: ORDER.index(item[0]))
# Other models under the same protocol, run only when named in --configs.
BASELINES = [("lmf", dict(model="lmf"))]


def soft_norm_loss(temperature):
    """L_cnce with the earlier softened norm `x / sqrt(|x|^2 + 1e-2)`."""
    from keras import ops

    from keras_mre.losses import CategoryContrastiveLoss

    class SoftNormContrastiveLoss(CategoryContrastiveLoss):
        def _normalize(self, x):
            squared = ops.sum(ops.square(x), axis=-1, keepdims=True)
            return x * ops.rsqrt(squared + 1e-2)

    return SoftNormContrastiveLoss(temperature=temperature)


def set_threads(threads):
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _flat_norm(grads):
    import numpy as np

    return float(np.sqrt(sum(float((g**2).numpy().sum()) for g in grads if g is not None)))


def _flat(grads, variables):
    import numpy as np

    return np.concatenate(
        [
            (g.numpy() if g is not None else np.zeros(v.shape, "float32")).ravel()
            for g, v in zip(grads, variables)
        ]
    )


def probe(model, valid, batches):
    """Gradient norms per loss term and the CE / L_cnce gradient cosine."""
    import numpy as np
    import tensorflow as tf

    variables = model.trainable_variables
    m1 = [v for v in variables if "relevance_hidden" in v.path or v.path.endswith("relevance_kernel")
          or v.path.endswith("relevance_bias")]
    # The contrastive term as the model would weight it, even when switched off.
    cnce_loss = model.category_contrastive_loss
    sums = {}
    count = 0
    for x, y in valid.take(batches):
        with tf.GradientTape(persistent=True) as tape:
            y_pred = model(x, training=False)
            labels = model._labels(y)
            terms = {"ce": model._ce_from_logits(labels, y_pred["logits"])}
            if model.config.use_rs_loss:
                terms["rs"] = model.config.rs_weight * model.relevant_semantic_loss(
                    model._packed_labels(y), y_pred
                )
            terms["cnce"] = model.config.cnce_weight * cnce_loss(labels, y_pred["embeddings"])
        grads = {name: tape.gradient(value, variables) for name, value in terms.items()}
        del tape
        flat = {name: _flat(g, variables) for name, g in grads.items()}
        values = {f"grad_{name}": float(np.linalg.norm(v)) for name, v in flat.items()}
        values["cos_ce_cnce"] = float(
            flat["ce"] @ flat["cnce"]
            / max(np.linalg.norm(flat["ce"]) * np.linalg.norm(flat["cnce"]), 1e-12)
        )
        index = {id(v): i for i, v in enumerate(variables)}
        values["grad_cnce_m1"] = _flat_norm([grads["cnce"][index[id(v)]] for v in m1])
        values["grad_ce_m1"] = _flat_norm([grads["ce"][index[id(v)]] for v in m1])
        values["cnce_value"] = float(terms["cnce"])
        for key, value in values.items():
            sums[key] = sums.get(key, 0.0) + value
        count += 1
    return {key: value / count for key, value in sums.items()}


def relevance_stats(model, valid):
    """Mean H per modality, H(agreeing) - H(disagreeing), mean |S^|."""
    import numpy as np

    modalities = list(model.config.modalities)
    h_all, agree_all, norms = [], [], []
    for x, y in valid:
        out = model(x, training=False)
        h = np.asarray(out["relevance"])
        h_all.append(h)
        label = np.asarray(y["emotion"]).reshape(-1)
        agree = np.stack(
            [np.asarray(y[f"emotion_{m}"]).reshape(-1) == label for m in modalities], axis=1
        )
        agree_all.append(agree)
        norms.append(np.linalg.norm(np.asarray(out["embeddings"]), axis=-1))
    h = np.concatenate(h_all)
    agree = np.concatenate(agree_all)
    stats = {f"H_{m}": float(h[:, i].mean()) for i, m in enumerate(modalities)}
    stats["H_gap"] = float(h[agree].mean() - h[~agree].mean())
    stats["S_norm"] = float(np.concatenate(norms).mean())
    return stats


def train_and_score(path, seed, epochs, batch_size, probe_batches, **overrides):
    """One MRE run: scores on valid and test plus diagnostics (a dict)."""
    from keras_mre import data
    from paper_tables import build_for

    overrides = dict(overrides)
    norm = overrides.pop("cnce_norm", "exact")
    model_name = overrides.pop("model", "mre")
    model = build_for(path, model_name, seed, batch_size, **overrides)
    if norm == "soft":
        # Swapped before the first fit, so the traced train step uses it.
        model.category_contrastive_loss = soft_norm_loss(model.config.temperature)
    train = data.load_dataset(path, "train", batch_size=batch_size, seed=seed)
    valid = data.load_dataset(path, "valid", batch_size=batch_size)
    test = data.load_dataset(path, "test", batch_size=batch_size)
    history = model.fit(train, epochs=epochs, verbose=0).history
    result = {}
    for split, dataset in (("valid", valid), ("test", test)):
        scores = model.evaluate(dataset, verbose=0, return_dict=True)
        result[f"{split}_acc"] = scores["accuracy"]
        result[f"{split}_f1"] = scores["f1_weighted"]
    for term in ("ce", "rs", "cnce"):
        if term in history:
            result[f"train_{term}"] = history[term][-1]
    if model_name == "mre":
        result.update(probe(model, valid, probe_batches))
        result.update(relevance_stats(model, valid))
    return result


def _mean_std(values, scale=100.0, digits=2):
    import numpy as np

    values = np.asarray(values, dtype="float64") * scale
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def _mean(values, digits=3):
    import numpy as np

    return f"{np.mean(values):.{digits}f}"


def report_lines(results, configs):
    import numpy as np

    done = [(label, overrides) for label, overrides in configs if label in results]
    lines = [
        "## Scores (%), mean ± std over seeds, ranked by VALID accuracy",
        "",
        "| Config | Overrides | Valid Acc | Valid F1 | Test Acc | Test F1 |",
        "|---|---|---|---|---|---|",
    ]
    ranked = sorted(
        done, key=lambda item: -np.mean([r["valid_acc"] for r in results[item[0]]])
    )
    for label, overrides in ranked:
        runs = results[label]
        shown = ", ".join(f"{k}={v}" for k, v in overrides.items())
        lines.append(
            f"| {label} | {shown} | "
            + " | ".join(
                _mean_std([r[key] for r in runs])
                for key in ("valid_acc", "valid_f1", "test_acc", "test_f1")
            )
            + " |"
        )
    lines += [
        "",
        "## Diagnostics (means over seeds)",
        "",
        "Last-epoch training terms as they enter eq 8 (weighted); gradient norms "
        "over all trainable weights on the first valid batches (inference mode); "
        "`cos` = cosine between the CE and the weighted L_cnce gradients; "
        "`cnce→M1` / `ce→M1` = gradient norms reaching the relevance head M1; "
        "H = relevance weights on valid, `H gap` = mean H of modalities whose "
        "unimodal label agrees with the multimodal label minus mean H of those "
        "that disagree; |S^| = mean norm of the weighted embeddings. For "
        "configs without L_cnce, `cnce` and its gradients are what L_cnce "
        "(weight 1, tau 0.1) would be on the trained model.",
        "",
        "| Config | train ce | train rs | train cnce | ‖∇ce‖ | ‖∇rs‖ | ‖∇cnce‖ | cos(ce, cnce) "
        "| cnce→M1 | ce→M1 | H text | H audio | H vision | H gap | \\|S^\\| |",
        "|---|" + "---|" * 14,
    ]
    for label, _ in ranked:
        runs = results[label]

        def cell(key, digits=3):
            values = [r[key] for r in runs if key in r]
            return _mean(values, digits) if values else "–"

        lines.append(
            f"| {label} | "
            + " | ".join(
                [
                    cell("train_ce"), cell("train_rs"), cell("train_cnce"),
                    cell("grad_ce"), cell("grad_rs"), cell("grad_cnce"),
                    cell("cos_ce_cnce"), cell("grad_cnce_m1", 4), cell("grad_ce_m1", 4),
                    cell("H_text"), cell("H_audio"), cell("H_vision"), cell("H_gap"),
                    cell("S_norm", 2),
                ]
            )
            + " |"
        )
    lines += ["", "## Per seed (valid acc / test acc, %)", ""]
    for label, _ in ranked:
        lines.append(
            f"- {label}: "
            + ", ".join(
                f"seed {r['seed']}: {100 * r['valid_acc']:.2f} / {100 * r['test_acc']:.2f}"
                for r in results[label]
            )
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sim-dir", default=str(pathlib.Path.home() / ".cache" / "keras-mre-bench" / "sim-sdme"))
    parser.add_argument("--sim-seed", type=int, default=0)
    parser.add_argument("--configs", nargs="+", default=None,
                        choices=[label for label, _ in CONFIGS + BASELINES],
                        help="configurations to run (default: every MRE one, in "
                             "ORDER; baselines such as lmf only when named)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--probe-batches", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "mre_loss_sweep.md"))
    parser.add_argument("--notes", default=None,
                        help="Markdown file appended as the 'What it shows' section")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    set_threads(args.threads)

    from tqdm import tqdm

    import model_speed
    from paper_tables import simulate

    if args.configs is None:
        configs = list(CONFIGS)
    else:
        configs = [c for c in CONFIGS + BASELINES if c[0] in args.configs]
    path = str(simulate(args.sim_dir, args.sim_seed, None))
    seeds = list(range(1, args.seeds + 1))
    started = time.time()
    header = [
        "# MRE auxiliary-loss sweep on the relevance simulator",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {model_speed.machine()}; TensorFlow limited to "
        f"{args.threads} intra-op / {args.threads} inter-op thread(s)",
        f"- Load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"- Versions: {model_speed.versions()}",
        f"- Command: `{' '.join(['python'] + sys.argv)}`",
        f"- Data: sim-sdme ({path}), splits train / valid / test",
        f"- Protocol: MRE (and any named baseline), seeds {seeds[0]}..{seeds[-1]}, {args.epochs} epochs, batch "
        f"{args.batch_size}, scored on valid and test after the last epoch (no early "
        "stopping). Configurations are ranked by valid accuracy; test is reported, "
        "never used to choose.",
        "",
    ]
    out = pathlib.Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {}

    def write(footer):
        lines = header + report_lines(results, configs) + [""] + footer
        if args.notes:
            lines += ["", pathlib.Path(args.notes).read_text().rstrip()]
        out.write_text("\n".join(lines) + "\n")

    with tqdm(total=len(configs) * len(seeds), desc="MRE runs", unit="run") as bar:
        for label, overrides in configs:
            runs = []
            for seed in seeds:
                bar.set_postfix_str(f"{label} seed {seed}")
                run = train_and_score(
                    path, seed, args.epochs, args.batch_size, args.probe_batches, **overrides
                )
                run["seed"] = seed
                runs.append(run)
                bar.update(1)
            results[label] = runs
            write([f"Runs in progress ({time.time() - started:.0f} s so far)."])
    write([
        f"- Load average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}",
        f"- Total wall time: {(time.time() - started) / 60:.1f} min.",
    ])
    print(out.read_text())


if __name__ == "__main__":
    main()
