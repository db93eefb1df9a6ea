"""Training speed of keras-mre against the PyTorch reference toolkit MMSA.

Times training steps (forward, loss, backward, optimizer update) of MMSA's
LMF, MulT and MISA and of keras-mre's MRE, LMF, MulT and MISA on identical
random tensors of CMU-MOSEI shapes (text 50x768, audio 500x74, vision 500x35),
alternating between the two frameworks round by round so that both see the
same machine load. Results go to `benchmarks/results/vs_mmsa.md`.

    python benchmarks/vs_mmsa.py                     # set up the venv if needed, run
    python benchmarks/vs_mmsa.py --batch-sizes 32 64 --rounds 3 --seconds 8

MMSA (pip `mmsa`, with the CPU build of torch) is installed into its own
virtual environment (`--venv`, default `~/.cache/keras-mre-bench/mmsa-venv`)
on first use. Each framework runs in its own persistent worker process with
the same thread count; only one worker computes at a time. Both workers run
with the same fixed glibc malloc thresholds (`FIXED_MALLOC`): with glibc's
adaptive defaults, PyTorch's speed depended on the models it had timed
before (`--glibc-malloc-defaults` keeps them).

How each MMSA model is fed, so that it does no more work than it does in its
own training loop:

- LMF gets audio and vision already averaged over time, `[B, 1, D]`, as
  MMSA's data loader hands them over (`need_normalized`); text `[B, 50, 768]`.
- MulT gets the three full sequences and no lengths (it has no masks).
- MISA's text encoder is BERT fine-tuning on token ids; here it is replaced
  by a module returning the precomputed text features, i.e. MISA on
  features. Its audio/vision LSTMs pack the sequences with the text lengths,
  as MMSA does, so they read at most 50 frames.

keras-mre's models get what they get in training: the full zero-padded
sequences and their lengths, `[B, T, D]` and `[B]`. A keras-mre step is the
compiled step `Model.fit` runs for each batch (`model.train_function` on the
batch, then reading the loss, as MMSA's loop reads `loss.item()`);
`--keras-step train_on_batch` times `Model.train_on_batch` instead, which
also resets every metric and converts all logs to numpy on each call, work
`fit` does once per epoch. keras-mre's MulT is
configured with MMSA's own MOSEI setting (`MMSA_MOSEI_MULT`: per-modality
kernels, attention dropout only where text is the source and in the
self-attention transformers, no dropout inside the transformers); the MMSA
worker checks that setting against MMSA's config file before timing.
`--lstm-projection-dtype bfloat16` runs the input projection of the text
LSTM of keras-mre's MRE and LMF in bfloat16 (`LSTMEncoder(projection_dtype=
...)`); MMSA stays in float32, so such a run compares an opt-in precision
trade against MMSA's float32 step, and its report says so.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_VENV = pathlib.Path.home() / ".cache" / "keras-mre-bench" / "mmsa-venv"
TORCH_VERSION = "2.13.0"
MMSA_VERSION = "2.2.1"
SHAPES = {"text": (50, 768), "audio": (500, 74), "vision": (500, 35)}
NUM_CLASSES = 3
MMSA_MODELS = ("lmf", "mult", "misa")
KERAS_MODELS = ("mre", "lmf", "mult", "misa")
# MMSA 2.2.1's MulT hyper-parameters for MOSEI (config_regression.json) as
# `MulTConfig` fields, and the MMSA names they come from.
MMSA_MOSEI_MULT = {
    "model_dim": 30,  # dst_feature_dim_nheads[0]
    "num_heads": 6,  # dst_feature_dim_nheads[1]
    "num_layers": 4,  # nlevels
    "conv_kernel_sizes": {"text": 5, "audio": 1, "vision": 3},  # conv1d_kernel_size_*
    "attention_dropout": 0.4,  # attn_dropout
    "source_attention_dropout": {"audio": 0.0, "vision": 0.0},  # attn_dropout_a/_v
    "transformer_dropout": 0.0,  # embed_dropout, res_dropout, relu_dropout
    "input_dropout": {"text": 0.3},  # text_dropout
    "dropout": 0.5,  # output_dropout
}


def check_mmsa_mult_setting(args):
    """Raises if MMSA's MOSEI MulT setting differs from `MMSA_MOSEI_MULT`."""
    expected = MMSA_MOSEI_MULT
    actual = {
        "model_dim": args["dst_feature_dim_nheads"][0],
        "num_heads": args["dst_feature_dim_nheads"][1],
        "num_layers": args["nlevels"],
        "conv_kernel_sizes": {
            "text": args["conv1d_kernel_size_l"],
            "audio": args["conv1d_kernel_size_a"],
            "vision": args["conv1d_kernel_size_v"],
        },
        "attention_dropout": args["attn_dropout"],
        "source_attention_dropout": {
            "audio": args["attn_dropout_a"], "vision": args["attn_dropout_v"]
        },
        "transformer_dropout": max(
            args["embed_dropout"], args["res_dropout"], args["relu_dropout"]
        ),
        "input_dropout": {"text": args["text_dropout"]},
        "dropout": args["output_dropout"],
    }
    if actual != expected:
        raise RuntimeError(
            f"MMSA's MOSEI MulT setting {actual} differs from MMSA_MOSEI_MULT "
            f"{expected}; update MMSA_MOSEI_MULT in {__file__}"
        )


def make_batch(batch_size, seed):
    """Random MOSEI-shaped batch as numpy arrays, identical for both sides."""
    import numpy as np

    rng = np.random.default_rng(seed)
    batch = {}
    for name, (steps, dim) in SHAPES.items():
        low = 10 if name == "text" else 100
        lengths = rng.integers(low, steps + 1, size=batch_size).astype("int32")
        frames = rng.standard_normal((batch_size, steps, dim)).astype("float32")
        frames *= (np.arange(steps)[None, :, None] < lengths[:, None, None])
        batch[name] = frames
        batch[f"{name}_length"] = lengths
    batch["label"] = rng.integers(0, NUM_CLASSES, size=batch_size).astype("int32")
    return batch


def pool_frames(batch, modalities):
    """The batch with `modalities` averaged over their valid frames,
    `[B, 1, D]` and length `min(length, 1)`: what MMSA's loader gives its LMF
    and `load_dataset(..., pool=model.pooled_modalities())` gives ours."""
    import numpy as np

    batch = dict(batch)
    for m in modalities:
        lengths = batch[f"{m}_length"]
        count = np.maximum(lengths, 1).astype("float32")[:, None, None]
        batch[m] = (batch[m].sum(1, keepdims=True) / count).astype("float32")
        batch[f"{m}_length"] = np.minimum(lengths, 1).astype("int32")
    return batch


class _StepTimer:
    """Times training steps; subclasses set `self.cache = {}` and define
    `_build(model_name, batch_size)` returning a one-step callable."""

    def time(self, model_name, batch_size, seconds, warmup):
        key = (model_name, batch_size)
        if key not in self.cache:
            self.cache[key] = self._build(model_name, batch_size)
        step = self.cache[key]
        for _ in range(warmup):
            step()
        steps, start = 0, time.perf_counter()
        while True:
            step()
            steps += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and steps >= 2:
                return steps, elapsed


# --------------------------------------------------------------------------
# MMSA worker (runs inside the MMSA venv; imports torch and MMSA only)
# --------------------------------------------------------------------------


class _MMSARunner(_StepTimer):
    def __init__(self, threads):
        import torch

        torch.set_num_threads(threads)
        self.torch = torch
        self.cache = {}

    def _args(self, model_name):
        import importlib.resources

        from easydict import EasyDict

        path = importlib.resources.files("MMSA") / "config" / "config_regression.json"
        table = json.loads(path.read_text())[model_name]
        args = dict(table["commonParams"])
        args.update(table["datasetParams"]["mosei"])
        args.update(
            model_name=model_name,
            dataset_name="mosei",
            train_mode="classification",
            num_classes=NUM_CLASSES,
            feature_dims=[SHAPES[m][1] for m in ("text", "audio", "vision")],
            seq_lens=[SHAPES[m][0] for m in ("text", "audio", "vision")],
            device=self.torch.device("cpu"),
            KeyEval="Loss",
            cur_seed=1,
        )
        return EasyDict(args)

    def _build(self, model_name, batch_size):
        torch = self.torch
        nn = torch.nn
        args = self._args(model_name)
        if model_name == "mult":
            check_mmsa_mult_setting(args)
        data = make_batch(batch_size, seed=batch_size)
        if model_name == "lmf":  # MMSA's loader averages them for LMF
            data = pool_frames(data, ("audio", "vision"))
        text = torch.from_numpy(data["text"])
        audio = torch.from_numpy(data["audio"])
        vision = torch.from_numpy(data["vision"])
        labels = torch.from_numpy(data["label"]).long()
        trainer = None
        if model_name == "misa":
            import MMSA.models  # noqa: F401  (loads the module patched below)

            misa_module = sys.modules["MMSA.models.singleTask.MISA"]
            features = text

            class PrecomputedText(nn.Module):
                def __init__(self, *unused, **unused_kwargs):
                    super().__init__()

                def forward(self, token_ids):
                    return features

            misa_module.BertTextEncoder = PrecomputedText
            mask = (
                torch.arange(SHAPES["text"][0])[None, :]
                < torch.from_numpy(data["text_length"])[:, None]
            ).float()
            text = torch.stack([torch.zeros_like(mask), mask, torch.zeros_like(mask)], 1)
        from MMSA.models import AMIO

        model = AMIO(args)
        if model_name == "misa":
            from MMSA.trains import ATIO

            trainer = ATIO().getTrain(args)
            trainer.model = model
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
        criterion = nn.CrossEntropyLoss()

        def step():
            optimizer.zero_grad()
            outputs = model(text, audio, vision)["M"]
            loss = criterion(outputs, labels)
            if trainer is not None:
                loss = (
                    loss
                    + args.diff_weight * trainer.get_diff_loss()
                    + args.sim_weight * trainer.get_cmd_loss()
                    + args.recon_weight * trainer.get_recon_loss()
                )
            loss.backward()
            if args.get("grad_clip", -1.0) != -1.0:
                nn.utils.clip_grad_value_(model.parameters(), args.grad_clip)
            optimizer.step()
            return float(loss.item())

        return step



def _versions_mmsa():
    import importlib.metadata

    import torch

    return {
        "torch": torch.__version__,
        "mmsa": importlib.metadata.version("mmsa"),
        "python": platform.python_version(),
    }


# --------------------------------------------------------------------------
# keras-mre worker (runs with the project's Python)
# --------------------------------------------------------------------------


class _KerasRunner(_StepTimer):
    def __init__(self, threads, keras_step="fit", projection_dtype=None):
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        self.tf = tf
        self.keras_step = keras_step
        self.projection_dtype = projection_dtype
        self.cache = {}

    def _build(self, model_name, batch_size):
        import keras_mre
        tf = self.tf
        data = make_batch(batch_size, seed=batch_size)
        feature_dims = {m: SHAPES[m][1] for m in ("text", "audio", "vision")}
        options = dict(MMSA_MOSEI_MULT) if model_name == "mult" else {}
        if self.projection_dtype and model_name in ("mre", "lmf"):
            options["lstm_projection_dtype"] = self.projection_dtype
        model = keras_mre.build_model(
            model_name,
            feature_dims=feature_dims,
            num_classes=NUM_CLASSES,
            batch_size=batch_size,
            **options,
        )
        data = pool_frames(data, model.pooled_modalities())
        x = {k: tf.constant(v) for k, v in data.items() if k != "label"}
        label = tf.constant(data["label"])
        y = {"emotion": label}
        for m in feature_dims:
            y[f"emotion_{m}"] = label

        if self.keras_step == "train_on_batch":
            def step():
                return model.train_on_batch(x, y)

            return step
        from model_speed import fit_step

        return fit_step(model, x, y)



def _versions_keras():
    import keras
    import tensorflow as tf

    import keras_mre

    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_mre": keras_mre.__version__,
        "python": platform.python_version(),
    }


def _worker(kind, threads, keras_step, projection_dtype=None):
    """Reads JSON requests on stdin, answers one JSON line each on stdout."""
    sys.path.insert(0, str(ROOT))
    if kind == "mmsa":
        runner = _MMSARunner(threads)
    else:
        runner = _KerasRunner(threads, keras_step, projection_dtype)
    versions = _versions_mmsa() if kind == "mmsa" else _versions_keras()
    out = sys.stdout
    sys.stdout = sys.stderr
    out.write(json.dumps({"versions": versions}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        try:
            steps, elapsed = runner.time(
                request["model"], request["batch"], request["seconds"], request["warmup"]
            )
            answer = {"steps": steps, "seconds": elapsed}
        except Exception as error:  # reported to the parent, which records it
            answer = {"error": f"{type(error).__name__}: {error}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


# --------------------------------------------------------------------------
# Parent process
# --------------------------------------------------------------------------


def ensure_venv(venv):
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import torch, MMSA"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    print(f"creating {venv} with torch=={TORCH_VERSION} (CPU) and mmsa=={MMSA_VERSION}")
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run(pip + [f"torch=={TORCH_VERSION}"], check=True)
    subprocess.run(pip + [f"mmsa=={MMSA_VERSION}"], check=True)
    subprocess.run(check, check=True)
    return python


# glibc's malloc hands large freed blocks back to the system (munmap, heap
# trim) and moves those thresholds with what the process freed before, so a
# framework that allocates through malloc runs at a speed that depends on its
# history: a PyTorch worker trained MMSA-LMF 1.65x faster once MulT had run
# in it (its large frees raise the thresholds; 1,300 -> 2,070 samples/s at
# batch 32), and as fast from the start with these fixed thresholds.
# TensorFlow's rate did not move with them. Both workers get the same.
FIXED_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": str(256 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(2**30),
}


class _Worker:
    def __init__(self, python, kind, threads, keras_step="fit", fixed_malloc=True,
                 projection_dtype=None):
        env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            OMP_NUM_THREADS=str(threads),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
        )
        if fixed_malloc:
            env.update(FIXED_MALLOC)
        self.process = subprocess.Popen(
            [str(python), str(pathlib.Path(__file__).resolve()), "--worker", kind,
             "--threads", str(threads), "--keras-step", keras_step]
            + (["--lstm-projection-dtype", projection_dtype] if projection_dtype else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=str(ROOT),
        )
        self.versions = self._read()["versions"]

    def _read(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("benchmark worker exited early; see its stderr above")
        return json.loads(line)

    def time(self, model, batch, seconds, warmup):
        request = dict(model=model, batch=batch, seconds=seconds, warmup=warmup)
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)


def _median(values):
    values = sorted(values)
    middle = len(values) // 2
    if len(values) % 2:
        return values[middle]
    return 0.5 * (values[middle - 1] + values[middle])


def run(args):
    python = ensure_venv(pathlib.Path(args.venv).expanduser())
    fixed = not args.glibc_malloc_defaults
    mmsa = _Worker(python, "mmsa", args.threads, fixed_malloc=fixed)
    keras_worker = _Worker(sys.executable, "keras", args.threads, args.keras_step, fixed,
                           args.lstm_projection_dtype)
    jobs = []
    for batch in sorted(set(args.batch_sizes) | set(args.mult_batch_sizes)):
        for model in args.models:
            sizes = args.mult_batch_sizes if model == "mult" else args.batch_sizes
            if batch not in sizes:
                continue
            if model in MMSA_MODELS and model not in args.skip_mmsa:
                jobs.append(("mmsa", model, batch))
            if model in KERAS_MODELS:
                jobs.append(("keras", model, batch))
    rates = {job: [] for job in jobs}
    errors = {}
    from tqdm import tqdm

    with tqdm(total=args.rounds * len(jobs), desc="timing", unit="run") as bar:
        for round_index in range(args.rounds):
            order = jobs if round_index % 2 == 0 else list(reversed(jobs))
            for job in order:
                side, model, batch = job
                worker = mmsa if side == "mmsa" else keras_worker
                if job in errors:
                    bar.update(1)
                    continue
                seconds = args.seconds * (args.slow_factor if model == "mult" else 1)
                answer = worker.time(model, batch, seconds, args.warmup)
                if "error" in answer:
                    errors[job] = answer["error"]
                else:
                    rates[job].append(batch * answer["steps"] / answer["seconds"])
                bar.set_postfix_str(f"{side} {model} b{batch}")
                bar.update(1)
    mmsa.close()
    keras_worker.close()
    return rates, errors, mmsa.versions, keras_worker.versions


def _machine():
    cpu = platform.processor() or platform.machine()
    vector = ""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not vector:
                flags = set(line.split(":", 1)[1].split())
                widest = [f for f in ("avx512f", "avx2", "avx") if f in flags]
                vector = f" ({widest[0] if widest else 'no AVX'})"
    except OSError:
        pass
    return (
        f"{cpu}{vector}, {os.cpu_count()} logical cores, "
        f"{platform.system()} {platform.release()}"
    )


def write_report(args, rates, errors, mmsa_versions, keras_versions):
    summary = {job: _median(values) for job, values in rates.items() if values}
    lines = [
        "# keras-mre vs MMSA: training samples/s on MOSEI shapes",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {_machine()}; {args.threads} threads per framework",
        f"- keras-mre side: " + ", ".join(f"{k} {v}" for k, v in keras_versions.items()),
        f"- MMSA side: " + ", ".join(f"{k} {v}" for k, v in mmsa_versions.items()),
        f"- Command: `{' '.join(['python'] + sys.argv)}`",
        f"- Shapes: text 50x768, audio 500x74, vision 500x35, {NUM_CLASSES} classes; "
        f"{args.rounds} alternating rounds of >= {args.seconds} s per model "
        f"(MulT {args.seconds * args.slow_factor} s) after {args.warmup} warm-up steps; "
        "median over rounds.",
        "- MMSA feeding as in its own loader: LMF gets time-averaged audio/vision "
        "`[B, 1, D]`; MulT full sequences without lengths; MISA precomputed text "
        "features (BERT replaced by a lookup) and audio/vision packed with the "
        "text lengths. keras-mre models get what `keras_mre.train` feeds them: "
        "MRE and LMF time-averaged audio/vision `[B, 1, D]` "
        "(`load_dataset(pool=model.pooled_modalities())`), the others full "
        "padded sequences; all with lengths. Both MulTs use MMSA's MOSEI "
        "setting (`MMSA_MOSEI_MULT`: kernels 5/1/3, attention dropout 0.4 where "
        "text is the source and in self-attention, none between audio and "
        "vision or inside the transformers, text input dropout 0.3, output 0.5).",
        "- Memory allocator: " + (
            "glibc defaults (thresholds that move with each worker's history)"
            if args.glibc_malloc_defaults else
            "the same fixed glibc malloc thresholds in both workers ("
            + ", ".join(f"{k}={v}" for k, v in FIXED_MALLOC.items())
            + "), so that neither framework's rate depends on the models timed before it"
        ),
        "- keras-mre text LSTM input projection (MRE, LMF): "
        + (f"{args.lstm_projection_dtype} (`--lstm-projection-dtype`; MMSA computes in "
           "float32 throughout)" if args.lstm_projection_dtype else "float32, as MMSA"),
        f"- keras-mre step: `{args.keras_step}`"
        + (" (the compiled step `Model.fit` runs per batch, then the loss read back)"
           if args.keras_step == "fit" else
           " (`Model.train_on_batch`: also resets the metrics and converts the logs "
           "on every call)"),
        "",
        "| model | batch | MMSA samples/s | keras-mre samples/s | keras-mre / MMSA | runs (MMSA, ours) |",
        "|---|---|---|---|---|---|",
    ]
    for batch in sorted(set(args.batch_sizes) | set(args.mult_batch_sizes)):
        for model in args.models:
            if ("keras", model, batch) not in rates and ("mmsa", model, batch) not in rates:
                continue
            ours = summary.get(("keras", model, batch))
            theirs = summary.get(("mmsa", model, batch))
            ratio = f"{ours / theirs:.2f}x" if ours and theirs else "-"
            lines.append(
                f"| {model} | {batch} | {theirs:.1f} | " if theirs else f"| {model} | {batch} | - | "
            )
            lines[-1] += f"{ours:.1f} | {ratio} | " if ours else f"- | {ratio} | "
            lines[-1] += (
                f"{len(rates.get(('mmsa', model, batch), []))}, "
                f"{len(rates.get(('keras', model, batch), []))} |"
            )
    lines += [
        "", "## Targets", "",
        "Each ratio is given twice: the ratio of the medians over rounds, and the median "
        "of the per-round ratios (the two jobs of a round ran minutes apart at most, so "
        "this pairs them under the same machine load). A target counts as met only when "
        "both meet it.", "",
    ]
    for batch in sorted(set(args.batch_sizes) | set(args.mult_batch_sizes)):
        mmsa_lmf = ("mmsa", "lmf", batch)
        targets = [
            ("keras-mre MRE vs MMSA-LMF", ("keras", "mre", batch), mmsa_lmf, 1.0),
            ("keras-mre LMF vs MMSA-LMF", ("keras", "lmf", batch), mmsa_lmf, 1.5),
            ("keras-mre MulT vs MMSA-MulT", ("keras", "mult", batch), ("mmsa", "mult", batch), 5.0),
            ("MRE step / LMF step", ("keras", "lmf", batch), ("keras", "mre", batch), None),
        ]
        for label, job, reference, bar in targets:
            if not summary.get(job) or not summary.get(reference):
                continue
            ratio = summary[job] / summary[reference]
            paired = _median([a / b for a, b in zip(rates[job], rates[reference])])
            if bar is None:  # a step-time ratio: inverse rates, target <= 1.5
                verdict = "met" if max(ratio, paired) <= 1.5 else "missed"
                lines.append(
                    f"- batch {batch}, {label} = {ratio:.2f} (paired {paired:.2f}; "
                    f"target <= 1.5): {verdict}"
                )
            else:
                verdict = "met" if min(ratio, paired) >= bar else "missed"
                lines.append(
                    f"- batch {batch}, {label} = {ratio:.2f}x (paired {paired:.2f}x; "
                    f"target >= {bar}x): {verdict}"
                )
    if errors:
        lines += ["", "## Runs that failed", ""]
        for (side, model, batch), message in errors.items():
            lines.append(f"- {side} {model} batch {batch}: {message}")
    lines += ["", "Raw samples/s per round:", ""]
    for job, values in rates.items():
        lines.append(f"- {job[0]} {job[1]} b{job[2]}: " + ", ".join(f"{v:.1f}" for v in values))
    out = pathlib.Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", default=str(DEFAULT_VENV), help="MMSA virtual environment")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--models", nargs="+", default=["mre", "lmf", "mult", "misa"])
    parser.add_argument("--mult-batch-sizes", type=int, nargs="+", default=[4],
                        help="batch sizes for MulT (MMSA's MOSEI setting: 4)")
    parser.add_argument("--skip-mmsa", nargs="*", default=[],
                        help="MMSA models not to time (e.g. mult when short of time)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0,
                        help="minimum timed seconds per model per round")
    parser.add_argument("--slow-factor", type=float, default=2.0,
                        help="MulT gets this many times --seconds")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "vs_mmsa.md"))
    parser.add_argument("--keras-step", choices=["fit", "train_on_batch"], default="fit",
                        help="what a keras-mre step is: the compiled step fit runs per "
                             "batch (default), or Model.train_on_batch")
    parser.add_argument("--glibc-malloc-defaults", action="store_true",
                        help="leave glibc's adaptive malloc thresholds in the workers "
                             "(the protocol before 2026-12-07)")
    parser.add_argument("--lstm-projection-dtype", choices=["bfloat16", "float16"], default=None,
                        help="dtype of the input projection of keras-mre's MRE and LMF text "
                             "LSTM (default float32)")
    parser.add_argument("--worker", choices=["mmsa", "keras"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.threads, args.keras_step, args.lstm_projection_dtype)
        return
    rates, errors, mmsa_versions, keras_versions = run(args)
    write_report(args, rates, errors, mmsa_versions, keras_versions)


if __name__ == "__main__":
    main()
