"""Fixtures for pipeline tests: tiny MMSA-layout pickles in every flavour,
and the real-media test assets of `tests/assets.py`."""

import importlib.util
import pathlib
import pickle
import sys
import types

import numpy as np
import pytest

# Per flavour: (frames, dim) per modality, whether lengths are stored, score
# range, unimodal SIMS scores, extra top-level keys.
FLAVOURS = {
    "mosi_unaligned": dict(text=(8, 16), audio=(12, 5), vision=(10, 20), lengths=True,
                           score=3.0, unimodal=False, config=False),
    "mosi_aligned": dict(text=(8, 16), audio=(8, 5), vision=(8, 20), lengths=False,
                         score=3.0, unimodal=False, config=False),
    "mosei_unaligned": dict(text=(8, 16), audio=(15, 7), vision=(14, 6), lengths=True,
                            score=3.0, unimodal=False, config=True),
    "sims_unaligned": dict(text=(6, 16), audio=(9, 4), vision=(5, 9), lengths=True,
                           score=1.0, unimodal=True, config=False),
    "simsv2_unaligned": dict(text=(6, 16), audio=(9, 4), vision=(5, 9), lengths=True,
                             score=1.0, unimodal=True, config=True),
}
SPLIT_SIZES = {"train": 7, "valid": 3, "test": 4}
# Scores that hit MMSA's bin edges and numpy's round-half-to-even.
CMU_SCORES = [0.0, -0.5, 0.5, 1.5, 2.5, -2.5, 3.0, -3.0, 1.4, -0.6, 2.2, -1.5, 0.2, -0.1]
SIMS_SCORES = [0.0, -0.1, 0.1, 0.7, -0.7, 1.0, -1.0, 0.4, -0.4, 0.8, 0.05, -0.2, 0.9, -0.9]


def make_mmsa(flavour, seed=0):
    """A dict in MMSA's layout for `flavour`, float64 features with -inf in audio."""
    spec = FLAVOURS[flavour]
    rng = np.random.default_rng(seed)
    scores = iter(SIMS_SCORES if spec["unimodal"] else CMU_SCORES)
    content = {}
    if spec["config"]:
        content["config"] = {"featureExtract": "test", "dims": [16, 7, 6]}
    for split, n in SPLIT_SIZES.items():
        data = {}
        text_frames = spec["text"][0]
        text_len = rng.integers(1, text_frames + 1, size=n)
        mask = (np.arange(text_frames)[None, :] < text_len[:, None]).astype(np.float64)
        data["text_bert"] = np.stack([mask * 101, mask, np.zeros_like(mask)], axis=1)
        for m in ("text", "audio", "vision"):
            frames, dim = spec[m]
            data[m] = rng.normal(size=(n, frames, dim))
            if spec["lengths"] and m != "text":
                data[f"{m}_lengths"] = list(rng.integers(0, frames + 1, size=n))
        data["text"] *= mask[..., None]
        data["audio"][0, 0, :2] = -np.inf
        data["regression_labels"] = np.array([next(scores) for _ in range(n)], np.float64)
        data["classification_labels"] = np.zeros(n)
        data["raw_text"] = np.array([f"words {i}" for i in range(n)], dtype=object)
        data["annotations"] = np.array(["Positive"] * n, dtype=object)
        data["id"] = np.array([f"{split}_clip${i}" for i in range(n)], dtype=object)
        if spec["unimodal"]:
            for suffix in "TAV":
                data[f"regression_labels_{suffix}"] = rng.choice(SIMS_SCORES, size=n)
        content[split] = data
    return content


@pytest.fixture
def mmsa_pickle(tmp_path):
    """Write an MMSA-layout pickle: `mmsa_pickle(flavour, protocol=4, content=None)`."""

    def write(flavour, protocol=4, content=None):
        content = make_mmsa(flavour) if content is None else content
        path = tmp_path / f"{flavour}-p{protocol}.pkl"
        with open(path, "wb") as f:
            pickle.dump(content, f, protocol=protocol)
        return path, content

    return write


@pytest.fixture
def mmsa_layouts():
    """The flavour table, the split sizes and the `make_mmsa` factory."""
    return types.SimpleNamespace(flavours=FLAVOURS, split_sizes=SPLIT_SIZES, make=make_mmsa)


@pytest.fixture(scope="session")
def test_assets():
    """The `tests/assets.py` module (loaded by path: `tests/` is no package).

    `test_assets.fetch()` gives the cached real media, `test_assets.speak()`
    speech from espeak-ng.
    """
    name = "keras_mre_test_assets"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, pathlib.Path(__file__).parents[1] / "assets.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
