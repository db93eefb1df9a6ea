"""Export a trained model as a SavedModel laid out for TensorFlow Serving.

`export_saved_model(run_or_model, export_dir, name="mre", version=1)` writes
`EXPORT_DIR/<name>/<version>/` (TF Serving's model base path is
`EXPORT_DIR/<name>`) with one signature, `serving_default`:

| input | dtype | shape |
|---|---|---|
| `<m>` for each modality | float32 | `[batch, frames, D_m]` |
| `<m>_length` | int32 | `[batch]` |

| output | dtype | shape |
|---|---|---|
| `probabilities` | float32 | `[batch, classes]` |
| `class_id` | int32 | `[batch]` |
| `class_name` | string | `[batch]` |
| `relevance` | float32 | `[batch, modalities]` (models with relevance weights) |
| `relevance_<m>` | float32 | `[batch]` for each modality |

The graph holds only core TensorFlow ops (no tensorflow-text), so a stock
`tensorflow/serving` binary loads it. It checks every request before the
model runs and answers a bad one with INVALID_ARGUMENT and a message naming
the input (`_check_request`): inputs whose batch sizes disagree, lengths
outside `0..frames sent`, NaN or infinite frames. TensorFlow itself refuses
wrong dtypes, ranks, feature widths and missing inputs against the
signature. The export is written under a hidden
temporary name (`.tmp-VERSION-HOST-PID`) and renamed into place when
complete; TF Serving ignores directories whose names are not version
numbers. The next export to the same model base removes such directories
left by killed exports of this host, and puts back a version that a killed
`overwrite` had moved aside (`.old-VERSION-HOST-PID`) before its replacement
arrived. A description of the signature is stored in
`assets.extra/keras_mre_signature.json`.
"""

import json
import os
import re
import shutil
import warnings

from keras_mre._processes import owner_is_dead
from keras_mre._processes import this_host
from keras_mre.data import schema
from keras_mre.errors import ConfigError
from keras_mre.errors import RunError

SIGNATURE_NAME = "serving_default"
SIGNATURE_FILE = os.path.join("assets.extra", "keras_mre_signature.json")


def _check_name(name):
    if not isinstance(name, str) or not name or name.startswith(".") or os.sep in name:
        raise ConfigError(f"export name {name!r}: expected a plain directory name")


def _check_version(version):
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"export version {version!r}: expected a positive integer")


def signature_description(model_config, class_names):
    """The inputs and outputs of the serving signature as a JSON-safe dict."""
    modalities = list(model_config.feature_dims)
    inputs = {}
    for m in modalities:
        inputs[m] = {"dtype": "float32", "shape": [None, None, int(model_config.feature_dims[m])]}
        inputs[schema.length_key(m)] = {"dtype": "int32", "shape": [None]}
    outputs = {
        "probabilities": {"dtype": "float32", "shape": [None, len(class_names)]},
        "class_id": {"dtype": "int32", "shape": [None]},
        "class_name": {"dtype": "string", "shape": [None]},
    }
    return {
        "signature": SIGNATURE_NAME,
        "model": model_config.MODEL_NAME,
        "modalities": modalities,
        "class_names": list(class_names),
        "inputs": inputs,
        "outputs": outputs,
    }


def make_serving_function(model, class_names=None):
    """A `tf.function` with the serving signature (see the module docstring).

    Args:
        model: A keras-mre model (a `.config` with `feature_dims`; output
            dict with `"emotion"` and optionally `"relevance"`).
        class_names: Class names; defaults to the model config's, else
            `"0"`, `"1"`, ...

    Returns:
        `(function, input_signature, description)`.
    """
    import tensorflow as tf

    config = model.config
    modalities = list(config.feature_dims)
    if class_names is None:
        class_names = config.class_names or [str(i) for i in range(config.num_classes)]
    class_names = [str(c) for c in class_names]
    if len(class_names) != config.num_classes:
        raise ConfigError(
            f"class_names has {len(class_names)} names but the model has {config.num_classes} classes"
        )
    specs = {}
    for m in modalities:
        specs[m] = tf.TensorSpec([None, None, int(config.feature_dims[m])], tf.float32, name=m)
        key = schema.length_key(m)
        specs[key] = tf.TensorSpec([None], tf.int32, name=key)
    names = tf.constant(class_names, dtype=tf.string)
    description = signature_description(config, class_names)

    def serve(inputs):
        outputs = model(_check_request(inputs, modalities), training=False)
        probabilities = tf.cast(outputs[schema.OUTPUT_PROBABILITIES], tf.float32)
        class_id = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        result = {
            "probabilities": probabilities,
            "class_id": class_id,
            "class_name": tf.gather(names, class_id),
        }
        if schema.OUTPUT_RELEVANCE in outputs:
            relevance = tf.cast(outputs[schema.OUTPUT_RELEVANCE], tf.float32)
            result["relevance"] = relevance
            for index, m in enumerate(modalities):
                result[f"relevance_{m}"] = relevance[:, index]
        return result

    # One tiny call tells whether the model has relevance outputs.
    probe = {
        k: tf.zeros([1, 1, s.shape[2]], s.dtype) if s.shape.rank == 3 else tf.ones([1], s.dtype)
        for k, s in specs.items()
    }
    if "relevance" in serve(probe):
        description["outputs"]["relevance"] = {"dtype": "float32", "shape": [None, len(modalities)]}
        for m in modalities:
            description["outputs"][f"relevance_{m}"] = {"dtype": "float32", "shape": [None]}
    return serve, [specs], description


def _check_request(inputs, modalities):
    """`inputs` with in-graph checks of a serving request (module docstring).

    Each failed check raises InvalidArgumentError (TF Serving's
    INVALID_ARGUMENT) whose message starts with `keras-mre request: input
    NAME` and is followed by TensorFlow's summary of the offending values.
    """
    import tensorflow as tf

    checked = dict(inputs)
    first = modalities[0]
    batch = tf.shape(inputs[first])[0]
    for m in modalities:
        key = schema.length_key(m)
        frames, lengths = inputs[m], inputs[key]
        # No quotes around the names: TensorFlow's Assert would print them
        # escaped (as \\').
        prefix = "keras-mre request: input"
        tf.debugging.assert_equal(
            tf.shape(frames)[0], batch,
            message=f"{prefix} {m} must hold as many clips as {first}",
        )
        tf.debugging.assert_equal(
            tf.shape(lengths)[0], batch,
            message=f"{prefix} {key} must hold one length per clip of {m}",
        )
        tf.debugging.assert_non_negative(
            lengths, message=f"{prefix} {key}: lengths must not be negative"
        )
        tf.debugging.assert_less_equal(
            lengths, tf.shape(frames)[1],
            message=f"{prefix} {key}: lengths must not exceed the frames sent in {m}",
        )
        checked[m] = tf.debugging.check_numerics(
            frames, message=f"{prefix} {m}: holds NaN or infinite values"
        )
    return checked


def _resolve_model(run_or_model):
    from keras_mre import training

    if hasattr(run_or_model, "config") and hasattr(run_or_model, "predict"):
        return run_or_model, None
    run = training.load_run(run_or_model)
    return run.load_model(compile=False), run


def export_saved_model(
    run_or_model,
    export_dir,
    *,
    name="mre",
    version=1,
    overwrite=False,
    class_names=None,
    verbose=True,
):
    """Export a run (or a model) to `EXPORT_DIR/<name>/<version>/`.

    Args:
        run_or_model: A run directory (its `model.keras` is exported) or a
            keras-mre model object.
        export_dir: Base directory; TF Serving's `--model_base_path` is
            `EXPORT_DIR/<name>`.
        name: Model name (the directory under `export_dir`).
        version: Version number (positive integer).
        overwrite: Replace an existing `EXPORT_DIR/<name>/<version>`.
        class_names: Override the class names served as `class_name`.
        verbose: Print where the export went.

    Returns:
        The path of the version directory.

    Raises:
        RunError: not a finished run, or the version directory exists and
            `overwrite` is False.
        ConfigError: bad name or version.
    """
    import keras

    _check_name(name)
    _check_version(version)
    export_dir = os.fspath(export_dir)
    model_base = os.path.join(export_dir, name)
    target = os.path.join(model_base, str(version))
    if os.path.isdir(model_base):
        # First, so that a version put back here counts as existing below.
        _clean_killed_exports(model_base)
    if os.path.exists(target) and not overwrite:
        raise RunError(f"{target}: export exists; pass --overwrite to replace it or choose another --version")
    model, _ = _resolve_model(run_or_model)
    serve, input_signature, description = make_serving_function(model, class_names)

    os.makedirs(model_base, exist_ok=True)
    owner = f"{version}-{this_host()}-{os.getpid()}"
    tmp = os.path.join(model_base, f".tmp-{owner}")
    shutil.rmtree(tmp, ignore_errors=True)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURE_NAME, serve, input_signature=input_signature)
    try:
        archive.write_out(tmp, verbose=False)
        os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
        with open(os.path.join(tmp, SIGNATURE_FILE), "w", encoding="utf-8") as f:
            json.dump(description, f, indent=2)
            f.write("\n")
        if os.path.exists(target):
            old = os.path.join(model_base, f".old-{owner}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        print(f"Exported SavedModel to {target} (signature {SIGNATURE_NAME!r}; "
              f"TF Serving --model_name={name} --model_base_path={os.path.abspath(model_base)})")
    return target


# `.tmp-VERSION-HOST-PID` (a version being written) and `.old-VERSION-HOST-PID`
# (the version an overwrite moved aside).
_SCRATCH = re.compile(r"^\.(tmp|old)-(\d+)-(.+)-(\d+)$")


def _clean_killed_exports(model_base):
    """Clears what killed exports of this host left in `model_base`.

    A `.tmp-` directory of a dead exporter is removed. An `.old-` directory
    of a dead exporter holds the version its overwrite moved aside; it is
    renamed back when that version directory is missing (the exporter died
    between the two renames), else removed. Directories of running
    exporters or of other hosts are left alone. Each action is reported in
    one `RuntimeWarning`.
    """
    removed, restored = [], []
    for entry in sorted(os.listdir(model_base)):
        match = _SCRATCH.match(entry)
        path = os.path.join(model_base, entry)
        if not match or not os.path.isdir(path):
            continue
        kind, version, host, pid = match.groups()
        if not owner_is_dead(int(pid), host):
            continue
        target = os.path.join(model_base, str(int(version)))
        if kind == "old" and not os.path.exists(target):
            os.replace(path, target)
            restored.append(f"{entry} -> {os.path.basename(target)}")
        else:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(entry)
    if removed or restored:
        parts = []
        if removed:
            parts.append(f"removed {len(removed)} temporary director"
                         f"{'y' if len(removed) == 1 else 'ies'} left by killed "
                         f"exports: {', '.join(removed)}")
        if restored:
            parts.append(f"put back the version a killed overwrite had moved "
                         f"aside: {', '.join(restored)}")
        warnings.warn(f"{model_base}: {'; '.join(parts)}", RuntimeWarning, stacklevel=3)


def read_signature_description(version_dir):
    """The `keras_mre_signature.json` of an export version directory."""
    path = os.path.join(os.fspath(version_dir), SIGNATURE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise RunError(f"{version_dir}: not a keras-mre export (no {SIGNATURE_FILE})") from None


def latest_version_dir(model_base):
    """The highest numbered version directory under `EXPORT_DIR/<name>`."""
    model_base = os.fspath(model_base)
    if not os.path.isdir(model_base):
        raise RunError(f"{model_base}: export directory not found")
    versions = [int(v) for v in os.listdir(model_base) if v.isdigit()]
    if not versions:
        raise RunError(f"{model_base}: holds no numbered version directory")
    return os.path.join(model_base, str(max(versions)))


def load_exported(path):
    """Load an exported SavedModel; returns its `serving_default` function.

    Args:
        path: A version directory, or a model base directory (its highest
            version is used).
    """
    import tensorflow as tf

    path = os.fspath(path)
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        path = latest_version_dir(path)
    loaded = tf.saved_model.load(path)
    return loaded.signatures[SIGNATURE_NAME]
