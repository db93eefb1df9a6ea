"""Shared fixtures of the workflow tests: tiny data sets and one trained run."""

import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(args, *, env=None, timeout=600, cwd=None):
    """Run `python -m keras_mre.cli ARGS` in a subprocess; returns CompletedProcess."""
    full_env = dict(os.environ)
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "keras_mre.cli", *args],
        capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd or REPO,
    )


def write_small_dataset(out_dir, *, num_clips=40, dims=None, lengths=None, classes=3,
                        with_score=False, splits=("train", "valid", "test"), seed=0):
    """A small random data set written with keras_mre.data.write_dataset."""
    from keras_mre import data

    dims = dims or {"text": 12, "audio": 6, "vision": 5}
    lengths = lengths or {m: 8 for m in dims}
    rng = np.random.default_rng(seed)
    class_names = [f"class{i}" for i in range(classes)]
    clips_by_split = {}
    for index, split in enumerate(splits):
        n = num_clips
        labels = rng.integers(0, classes, n)
        features = {}
        for m, d in dims.items():
            prototypes = rng.normal(size=(classes, d))
            features[m] = (prototypes[labels][:, None, :]
                           + 0.5 * rng.normal(size=(n, lengths[m], d))).astype(np.float32)
        clip_lengths = {m: rng.integers(1, lengths[m] + 1, n) for m in dims}
        unimodal = {m: np.where(rng.random(n) < 0.7, labels, rng.integers(0, classes, n))
                    for m in dims}
        scores = None
        if with_score:
            scores = (labels - (classes - 1) / 2) + 0.3 * rng.normal(size=n)
            scores[0] = 0.0
        clips_by_split[split] = list(data.clips_from_arrays(
            [f"{split}-{i}" for i in range(n)], features, clip_lengths, labels,
            unimodal_labels=unimodal, scores=scores,
        ))
    return data.write_dataset(
        out_dir, clips_by_split, feature_dims=dims, class_names=class_names,
        max_lengths=lengths, name="small", has_score=with_score, progress=False,
    )


@pytest.fixture(scope="session")
def small_data(tmp_path_factory):
    """Directory of a 3-class data set with tiny dims and 40 clips per split."""
    path = str(tmp_path_factory.mktemp("data") / "small")
    write_small_dataset(path)
    return path


@pytest.fixture(scope="session")
def scored_data(tmp_path_factory):
    """Like `small_data` (same dims and classes) but with regression scores."""
    path = str(tmp_path_factory.mktemp("data") / "scored")
    write_small_dataset(path, with_score=True, seed=1)
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, small_data):
    """A finished 2-epoch MRE run on `small_data` (shared, read-only)."""
    import keras

    from keras_mre import training

    keras.utils.set_random_seed(7)
    run_dir = str(tmp_path_factory.mktemp("runs") / "run")
    training.train(small_data, run_dir, epochs=2, batch_size=16, seed=7,
                   config={"hidden_dim": 16}, verbose=0)
    return run_dir
