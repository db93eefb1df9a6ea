"""Fixtures of the hostile-input suite: tiny data sets, one tiny run and export.

Everything expensive is built once per session and shared read-only; a test
that damages something works on its own copy (`data_copy`, `run_copy`).
"""

import os
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIMS = {"text": 6, "audio": 4, "vision": 3}
MAX_LENGTHS = {"text": 5, "audio": 5, "vision": 5}
CLASSES = ["calm", "happy", "sad"]
CLIPS_PER_SPLIT = 16
TINY_CONFIG = {"hidden_dim": 8}
CLI = os.path.join(os.path.dirname(sys.executable), "keras-mre")


def tiny_clips(split, n=CLIPS_PER_SPLIT, dims=DIMS, seed=0, lengths=(0, 7)):
    """Clips whose frames carry their class; lengths drawn from `lengths`."""
    from keras_mre import data

    rng = np.random.default_rng([seed, len(split)])
    clips = []
    for i in range(n):
        label = int(rng.integers(0, len(CLASSES)))
        features = {
            m: (rng.normal(size=(int(rng.integers(*lengths)), d)) + label).astype(np.float32)
            for m, d in dims.items()
        }
        clips.append(data.Clip(id=f"{split}-{i}", features=features, label=label,
                               unimodal_labels={m: label for m in dims}))
    return clips


def write_tiny(path, *, dims=DIMS, splits=("train", "valid", "test"), seed=0, name="tiny",
               shard_size=8, **kwargs):
    """A tiny data set written with keras_mre.data.write_dataset."""
    from keras_mre import data

    clips = {s: tiny_clips(s, dims=dims, seed=seed) for s in splits}
    return data.write_dataset(
        path, clips, feature_dims=dims, class_names=CLASSES,
        max_lengths={m: MAX_LENGTHS.get(m, 5) for m in dims}, name=name,
        shard_size=shard_size, progress=False, **kwargs,
    )


def features(batch=2, frames=3, dtype=np.float32, dims=DIMS):
    """A serving request: frames of ones, every length `frames`."""
    out = {}
    for m, d in dims.items():
        out[m] = np.ones((batch, frames, d), dtype)
        out[f"{m}_length"] = np.full((batch,), frames, np.int32)
    return out


def run_cli_subprocess(args, *, env=None, timeout=240):
    """Run the installed `keras-mre` program; returns CompletedProcess."""
    full_env = dict(os.environ)
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    full_env.update(env or {})
    command = [CLI] if os.path.exists(CLI) else [sys.executable, "-m", "keras_mre.cli"]
    return subprocess.run([*command, *args], capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=REPO)


def assert_one_line_error(rc, err, *patterns, status=2):
    """The CLI's outcome for a user error: status 2, one error line, no traceback.

    `status=None` accepts any non-zero exit status.
    """
    import re

    if status is None:
        assert rc != 0, err
    else:
        assert rc == status, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("keras-mre: error:")]
    assert len(lines) == 1, err
    for pattern in patterns:
        assert re.search(pattern, lines[0]), f"{pattern!r} not in {lines[0]!r}"
    # Nothing TensorFlow-internal leaks into the line.
    assert "{{function_node" not in lines[0] and "[Op:" not in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def cli(capsys):
    """Run `keras-mre ARGS` in this process: returns (status, stdout, stderr).

    An exception escaping `main` is what the user would see as a traceback,
    so it fails the test as it is.
    """
    from keras_mre import cli as cli_module

    def run(*args):
        capsys.readouterr()
        status = cli_module.main([str(a) for a in args])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A 3-class data set with tiny dims, 16 clips per split, shards of 8."""
    path = str(tmp_path_factory.mktemp("hostile-data") / "tiny")
    write_tiny(path)
    return path


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """A small simulated SDME-like data set (other dims and classes than tiny)."""
    from keras_mre_pipelines import synth

    path = str(tmp_path_factory.mktemp("hostile-synth") / "sdme")
    synth.synthesize(path, preset="sdme", seed=3, num_clips=30, shard_size=8, progress=False)
    return path


@pytest.fixture
def data_copy(tiny_data, tmp_path):
    """A private copy of `tiny_data` to damage."""
    path = str(tmp_path / "data")
    shutil.copytree(tiny_data, path)
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_data):
    """A finished 1-epoch MRE run on `tiny_data` (shared, read-only)."""
    from keras_mre import training

    run_dir = str(tmp_path_factory.mktemp("hostile-runs") / "run")
    training.train(tiny_data, run_dir, epochs=1, batch_size=8, seed=5, config=TINY_CONFIG,
                   histogram_freq=0, verbose=0)
    return run_dir


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A private copy of `tiny_run` to tamper with."""
    path = str(tmp_path / "run")
    shutil.copytree(tiny_run, path)
    return path


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_run):
    """`tiny_run` exported: namespace with base, model_base and version_dir."""
    from keras_mre import export

    base = str(tmp_path_factory.mktemp("hostile-export"))
    version_dir = export.export_saved_model(tiny_run, base, name="mre", version=1, verbose=False)
    return types.SimpleNamespace(base=base, model_base=os.path.join(base, "mre"),
                                 version_dir=version_dir)


@pytest.fixture(scope="session")
def serving_function(tiny_export):
    """The `serving_default` function of `tiny_export`."""
    from keras_mre import export

    return export.load_exported(tiny_export.version_dir)


@pytest.fixture(scope="session")
def grpc_server(tiny_export):
    """An in-process PredictionService serving `tiny_export` as model 'mre'."""
    from keras_mre import serving

    with serving.LocalPredictionServer(tiny_export.model_base, "mre") as server:
        yield server
