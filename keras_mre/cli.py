"""The `keras-mre` command line.

```
keras-mre demo                                    # simulator -> train -> evaluate -> export -> predict
keras-mre synth --out data/sdme                   # simulated data set
keras-mre convert mmsa ...                        # MMSA pickles -> data set
keras-mre extract --manifest clips.csv --out DIR  # raw clips -> data set
keras-mre train --data DIR --out RUN              # train (resumes an interrupted RUN)
keras-mre evaluate --run RUN --data DIR           # metrics, confusion matrix, relevance analysis
keras-mre export --run RUN --out EXPORT_DIR       # SavedModel for TF Serving
```

Errors a user can cause print one line `keras-mre: error: ...` and exit with
status 2; `--debug` shows the traceback instead.
"""

import argparse
import importlib
import os
import re
import sys
import time
import warnings

from keras_mre.errors import ConfigError
from keras_mre.errors import KerasMREError
from keras_mre.errors import RunError

PROG = "keras-mre"
# Sub-commands provided by keras_mre_pipelines: command -> (module, help).
PIPELINE_COMMANDS = {
    "synth": ("keras_mre_pipelines.synth", "write a simulated data set (SDME-like relevance simulator)"),
    "extract": ("keras_mre_pipelines.manifest", "extract features of raw clips listed in a manifest CSV"),
}
CONVERTERS = {
    "mmsa": ("keras_mre_pipelines.mmsa", "convert MMSA feature pickles (MOSI, MOSEI, SIMS)"),
}
DEMO_NUM_CLIPS = 3667
DEMO_EPOCHS = 10
DEMO_PATIENCE = 3


# --------------------------------------------------------------------------
# Handlers
# --------------------------------------------------------------------------


def _train(args):
    from keras_mre import training

    training.train(
        args.data,
        args.out,
        model=args.model,
        config=args.config,
        epochs=args.epochs,
        batch_size=args.batch_size,
        seed=args.seed,
        strategy=args.strategy,
        deterministic=args.deterministic,
        patience=args.patience,
        learning_rate=args.learning_rate,
        overwrite=args.overwrite,
        histogram_freq=args.histogram_freq,
        steps_per_epoch=args.steps_per_epoch,
        cluster_timeout=args.cluster_timeout,
        verbose=args.verbose,
        bucket_by=args.bucket_by,
    )
    return 0


def _evaluate(args):
    from keras_mre import evaluation

    if args.seeds is not None:
        evaluation.evaluate_seeds(
            args.run, args.data, seeds=args.seeds, split=args.split, first_seed=args.first_seed
        )
    else:
        evaluation.evaluate_run(args.run, args.data, args.split, batch_size=args.batch_size)
    return 0


def _export(args):
    from keras_mre import export

    export.export_saved_model(
        args.run, args.out, name=args.name, version=args.version, overwrite=args.overwrite
    )
    return 0


def _demo(args):
    demo(args.out, epochs=args.epochs, num_clips=args.num_clips, seed=args.seed,
         overwrite=args.overwrite)
    return 0


def demo(out_dir="keras-mre-demo", *, epochs=DEMO_EPOCHS, num_clips=DEMO_NUM_CLIPS, seed=0,
         overwrite=False):
    """Simulator data -> train MRE -> evaluate -> export -> one served prediction.

    Writes `OUT/data` (simulated SDME-like data set), `OUT/run` (the
    training run and its `eval/test/`) and `OUT/export/mre/1` (SavedModel),
    then feeds one test clip through the exported SavedModel and prints the
    predicted class with its relevance weight per modality. Steps whose
    output already exists are reused (an interrupted demo resumes);
    `overwrite=True` starts over.

    Returns:
        Dict with the paths, the test metrics, the prediction and the wall
        time of each step.
    """
    import shutil

    import numpy as np

    from keras_mre import data as data_lib
    from keras_mre import evaluation
    from keras_mre import export
    from keras_mre import training

    synth = _import_pipeline("keras_mre_pipelines.synth", "demo")
    out_dir = os.fspath(out_dir)
    data_dir = os.path.join(out_dir, "data")
    run_dir = os.path.join(out_dir, "run")
    export_dir = os.path.join(out_dir, "export")
    known = {"data", "run", "export"}
    if os.path.isdir(out_dir):
        foreign = sorted(set(os.listdir(out_dir)) - known)
        if foreign and not overwrite:
            raise RunError(
                f"{out_dir}: exists and holds {foreign[:3]}, which the demo did not write; "
                "choose another --out"
            )
        if overwrite:
            for name in known:
                shutil.rmtree(os.path.join(out_dir, name), ignore_errors=True)
    os.makedirs(out_dir, exist_ok=True)
    timings = {}
    start = time.time()

    def step(title):
        print(f"\n== {title} ==", flush=True)
        return time.time()

    t0 = step(f"1/5 simulated data set ({num_clips} clips) -> {data_dir}")
    if os.path.isfile(os.path.join(data_dir, data_lib.INFO_FILENAME)):
        info = data_lib.load_info(data_dir)
        print(f"reusing {data_dir}")
    else:
        info = synth.synthesize(data_dir, preset="sdme", seed=seed, num_clips=num_clips,
                                overwrite=True)
    timings["data_s"] = time.time() - t0

    t0 = step(f"2/5 train MRE ({epochs} epochs max) -> {run_dir}")
    if training.is_finished_run(run_dir):
        print(f"reusing the finished run {run_dir}")
    else:
        training.train(data_dir, run_dir, model="mre", epochs=epochs, seed=1111 + seed,
                       patience=DEMO_PATIENCE, histogram_freq=0)
    timings["train_s"] = time.time() - t0

    t0 = step("3/5 evaluate on the test split")
    metrics = evaluation.evaluate_run(run_dir, data_dir, "test")
    timings["evaluate_s"] = time.time() - t0

    t0 = step(f"4/5 export SavedModel -> {export_dir}")
    version_dir = export.export_saved_model(run_dir, export_dir, name="mre", version=1,
                                            overwrite=True)
    timings["export_s"] = time.time() - t0

    t0 = step("5/5 one prediction through the exported SavedModel")
    serve = export.load_exported(version_dir)
    features, labels = next(iter(data_lib.load_dataset(data_dir, "test", 1, shuffle=False)))
    outputs = {k: v.numpy() for k, v in serve(**features).items()}
    true_class = info.class_names[int(labels["emotion"][0])]
    predicted = outputs["class_name"][0].decode()
    print(f"clip 0 of the test split: true class {true_class!r}, predicted {predicted!r}")
    probabilities = outputs["probabilities"][0]
    print("probabilities: " + ", ".join(
        f"{name} {p:.3f}" for name, p in zip(info.class_names, probabilities)))
    relevance = {m: float(outputs[f"relevance_{m}"][0]) for m in info.modalities
                 if f"relevance_{m}" in outputs}
    if relevance:
        print("relevance weights H: " + ", ".join(f"{m} {h:.3f}" for m, h in relevance.items()))
    for m in info.modalities:
        key = f"emotion_{m}"
        if key in labels and int(labels[key][0]) >= 0:
            print(f"  {m} label: {info.class_names[int(labels[key][0])]}")
    timings["predict_s"] = time.time() - t0
    timings["total_s"] = time.time() - start
    print(f"\nDemo finished in {timings['total_s']:.0f} s. Test accuracy "
          f"{metrics['accuracy']:.3f}, weighted F1 {metrics['f1_weighted']:.3f}.")
    print(f"TensorBoard: tensorboard --logdir {os.path.join(run_dir, 'logs')}")
    print(f"TF Serving: --model_name=mre --model_base_path={os.path.abspath(os.path.join(export_dir, 'mre'))}")
    return {
        "data_dir": data_dir,
        "run_dir": run_dir,
        "export_dir": version_dir,
        "metrics": {k: metrics[k] for k in ("accuracy", "f1_weighted", "f1_macro")},
        "prediction": {"class_name": predicted, "true_class": true_class,
                       "probabilities": np.asarray(probabilities).tolist(),
                       "relevance": relevance},
        "timings": timings,
    }


# --------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line, exit status 2."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message} (see `{self.prog} --help`)\n")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _modality_list(text):
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated modality names, got {text!r}"
        )
    return names


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _import_pipeline(module, command):
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(
            f"the {command!r} command is unavailable: cannot import {module} ({error})"
        ) from None


def _add_pipeline_command(subparsers, name, module, help_text, load):
    """Register a sub-command from keras_mre_pipelines, or a stand-in."""
    if load:
        try:
            return importlib.import_module(module).add_parser(subparsers)
        except ImportError as error:
            reason = f"cannot import {module} ({error})"
    else:
        reason = None
    parser = subparsers.add_parser(
        name, help=help_text, add_help=load,
        description=f"unavailable: {reason}" if reason else None,
    )
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def unavailable(args):
        raise ConfigError(f"the {name!r} command is unavailable: {reason}")

    parser.set_defaults(handler=unavailable)
    return parser


def build_parser(command=None):
    """The argparse parser; `command` limits pipeline imports to the one used."""
    parser = _Parser(
        prog=PROG,
        description="Multimodal emotion recognition with Multimodal Relevance Estimation (MRE).",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    load_all = command is None

    p = subparsers.add_parser("demo", help="simulator data -> train -> evaluate -> export -> predict")
    p.add_argument("--out", default="keras-mre-demo", help="output directory (default %(default)s)")
    p.add_argument("--epochs", type=_positive_int, default=DEMO_EPOCHS,
                   help="maximum training epochs (default %(default)s)")
    p.add_argument("--num-clips", type=_positive_int, default=DEMO_NUM_CLIPS,
                   help="simulated clips over all splits (default %(default)s)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="simulator seed")
    p.add_argument("--overwrite", action="store_true", help="start over instead of reusing outputs")
    p.set_defaults(handler=_demo)

    for name, (module, help_text) in PIPELINE_COMMANDS.items():
        _add_pipeline_command(subparsers, name, module, help_text, load_all or command == name)

    convert = subparsers.add_parser("convert", help="convert foreign data set formats")
    convert_sub = convert.add_subparsers(dest="converter", metavar="FORMAT", parser_class=_Parser)
    for name, (module, help_text) in CONVERTERS.items():
        _add_pipeline_command(convert_sub, name, module, help_text, load_all or command == "convert")
    convert.set_defaults(handler=lambda args: _missing_sub(convert, "FORMAT"))

    p = subparsers.add_parser("train", help="train a model on a data set (resumes an unfinished run)")
    p.add_argument("--data", required=True, help="data set directory")
    p.add_argument("--out", required=True, help="run directory to write or resume")
    p.add_argument("--model", default=None, help="model name (default: the config's, else mre)")
    p.add_argument("--config", default=None, help="model config JSON file")
    p.add_argument("--epochs", type=_positive_int, default=None, help="maximum epochs (default 30)")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="global batch size (default: the config's, 64)")
    p.add_argument("--seed", type=_non_negative_int, default=None, help="random seed (default 1111)")
    p.add_argument("--strategy", choices=("auto", "mirrored", "multiworker", "none"), default="auto",
                   help="distribution strategy (default auto)")
    p.add_argument("--deterministic", action="store_true",
                   help="enable TensorFlow op determinism (identical reruns on CPU)")
    p.add_argument("--patience", type=_positive_int, default=None,
                   help="early-stopping patience in epochs (default 5)")
    p.add_argument("--learning-rate", type=float, default=None, help="override the learning rate")
    p.add_argument("--steps-per-epoch", type=_positive_int, default=None)
    p.add_argument("--bucket-by", type=_modality_list, default=None, metavar="MODALITIES",
                   help="batch clips of similar length together, by these comma-separated "
                        "modalities' lengths (e.g. audio,vision for MulT)")
    p.add_argument("--histogram-freq", type=_non_negative_int, default=1,
                   help="epochs between TensorBoard weight histograms, 0 = off (default 1)")
    p.add_argument("--cluster-timeout", type=_positive_int, default=120,
                   help="seconds to wait for multi-worker peers (default 120)")
    p.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                   help="0 silent, 1 progress bars, 2 one line per epoch")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.set_defaults(handler=_train)

    p = subparsers.add_parser("evaluate", help="metrics, confusion matrix and relevance analysis of a run")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--data", default=None, help="data set directory (default: the run's)")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--seeds", type=_positive_int, default=None,
                   help="train and evaluate K seeds with the run's settings; report mean ± std")
    p.add_argument("--first-seed", type=_non_negative_int, default=1111,
                   help="first seed of --seeds (default 1111)")
    p.set_defaults(handler=_evaluate)

    p = subparsers.add_parser("export", help="export a run as a SavedModel for TF Serving")
    p.add_argument("--run", required=True, help="run directory")
    p.add_argument("--out", required=True, help="export base directory")
    p.add_argument("--name", default="mre", help="model name, the directory under --out (default mre)")
    p.add_argument("--version", type=_positive_int, default=1, help="model version (default 1)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing version")
    p.set_defaults(handler=_export)

    for sub in _all_subparsers(parser):
        if "--debug" not in sub._option_string_actions:
            sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show tracebacks instead of one-line errors")
    return parser


def _all_subparsers(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield sub
                yield from _all_subparsers(sub)


def _missing_sub(parser, what):
    parser.error(f"choose a {what}")


def _first_command(argv):
    for token in argv:
        if not token.startswith("-"):
            return token
    return None


def _one_line(error):
    text = " ".join(str(error).split())
    # TensorFlow wraps op errors in its function and op names; keep the message.
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\](\s*name:\s*\S*)?", "", text).strip()
    return text or type(error).__name__


def _expected_errors():
    errors = [KerasMREError, OSError]
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        errors.append(tf.errors.OpError)
    return tuple(errors)


def _import_tensorflow_quietly():
    """Import TensorFlow with its native start-up lines kept off stderr.

    TensorFlow's C++ runtime prints absl and CUDA probing lines while it is
    imported and while it looks for GPUs, before any log level applies. They
    go to the null device here so that an error is the only line a failing
    command prints (`--debug` skips this).
    """
    if "tensorflow" in sys.modules:
        return
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        sys.stderr.flush()
        os.dup2(null, 2)
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _show_own_warnings(message, category, filename, lineno, file=None, line=None):
    """`warnings.showwarning` for the CLI: the package's own RuntimeWarnings
    as one `keras-mre: warning: ...` line; any other warning as Python
    shows it."""
    own = (f"{os.sep}keras_mre{os.sep}", f"{os.sep}keras_mre_pipelines{os.sep}",
           f"{os.sep}pipelines{os.sep}")
    if issubclass(category, RuntimeWarning) and any(part in filename for part in own):
        print(f"{PROG}: warning: {_one_line(message)}", file=file or sys.stderr)
        return
    _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def main(argv=None):
    """Entry point of `keras-mre`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = _first_command(argv)
    help_wanted = command is None or "-h" in argv or "--help" in argv
    parser = build_parser(None if help_wanted and command is None else command)
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        if not args.debug:
            _import_tensorflow_quietly()
        with warnings.catch_warnings():
            warnings.showwarning = _show_own_warnings
            return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001  (filtered just below)
        if args.debug or not isinstance(error, _expected_errors()):
            raise
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
