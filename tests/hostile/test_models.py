"""build_model and `.keras` loading on hostile input: bad parameters, foreign and tampered files."""

import json
import os
import zipfile

import keras
import numpy as np
import pytest

from keras_mre import models
from keras_mre import training
from keras_mre.errors import ConfigError
from keras_mre.errors import RunError

DIMS = {"text": 6, "audio": 4, "vision": 3}


@pytest.mark.parametrize("overrides, message", [
    (dict(feature_dims={}), r"feature_dims"),
    (dict(feature_dims={"text": 0, "audio": 4}), r"feature_dims"),
    (dict(feature_dims={"text": "768", "audio": 4}), r"feature_dims"),
    (dict(num_classes=1), r"num_classes"),
    (dict(num_classes=3, class_names=["a", "b"]), r"class_names"),
    (dict(dropout=1.5), r"dropout"),
    (dict(hidden_dim=float("nan")), r"hidden_dim"),
    (dict(learning_rate=float("inf")), r"learning_rate"),
    (dict(colour="red"), r"colour"),
])
def test_build_model_names_the_bad_parameter(overrides, message):
    options = dict(feature_dims=DIMS, num_classes=3)
    options.update(overrides)
    with pytest.raises(ConfigError, match=message):
        models.build_model("mre", compile=False, **options)


def test_build_model_unknown_name():
    with pytest.raises(ConfigError, match=r"model='bert': unknown model; available: "):
        models.build_model("bert")


def rewrite_keras_file(path, change):
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    change(config)
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, blob in files.items():
            archive.writestr(name, blob)


def test_keras_file_of_another_model_is_refused(run_copy, cli, tmp_path):
    from .conftest import assert_one_line_error

    path = os.path.join(run_copy, "model.keras")
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    other.save(path)
    with pytest.raises(RunError, match=r"run/model.keras: holds a Sequential, not a keras-mre model"):
        training.load_run(run_copy).load_model()
    status, _, err = cli("export", "--run", run_copy, "--out", tmp_path / "export")
    assert_one_line_error(status, err, r"run/model.keras: holds a Sequential, not a keras-mre model")
    assert not os.path.exists(tmp_path / "export" / "mre" / "1")


def test_keras_file_of_another_mre_model_is_refused(run_copy):
    path = os.path.join(run_copy, "model.keras")
    other = models.build_model("mre", feature_dims=DIMS, num_classes=3, hidden_dim=4, compile=False)
    other.save(path)
    with pytest.raises(RunError, match=r"run/model.keras: the model's config differs from config.json of the run"):
        training.load_run(run_copy).load_model()


def test_tampered_config_with_a_lambda_is_refused_in_safe_mode(run_copy, tmp_path):
    marker = tmp_path / "pwned"
    code = f"lambda x: open({str(marker)!r}, 'w')"

    def to_lambda(config):
        config.clear()
        config.update({
            "module": "keras.layers", "class_name": "Lambda", "registered_name": None,
            "config": {"name": "l", "function": {"class_name": "__lambda__",
                                                 "config": {"code": code, "defaults": None,
                                                            "closure": None}},
                       "output_shape": None, "arguments": {}},
        })

    rewrite_keras_file(os.path.join(run_copy, "model.keras"), to_lambda)
    with pytest.raises(RunError, match=r"run/model.keras: cannot load the model: .*Lambda.*safe_mode"):
        training.load_run(run_copy).load_model()
    assert not marker.exists()


def test_tampered_config_naming_os_system_runs_nothing(run_copy, tmp_path):
    marker = tmp_path / "pwned"

    def to_system(config):
        config.update(module="os", class_name="system", registered_name="system",
                      config=f"touch {marker}")

    rewrite_keras_file(os.path.join(run_copy, "model.keras"), to_system)
    with pytest.raises(RunError, match=r"run/model.keras: cannot load the model"):
        training.load_run(run_copy).load_model()
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_tampered_hidden_dim_does_not_load_wrong_weights(run_copy):
    def wider(config):
        config["config"]["config"]["hidden_dim"] = 16

    rewrite_keras_file(os.path.join(run_copy, "model.keras"), wider)
    with pytest.raises(RunError, match=r"run/model.keras: cannot load the model: .*could not be loaded"):
        training.load_run(run_copy).load_model()


def test_truncated_keras_file(run_copy):
    path = os.path.join(run_copy, "model.keras")
    with open(path, "rb") as f:
        blob = f.read()
    with open(path, "wb") as f:
        f.write(blob[: len(blob) // 2])
    with pytest.raises(RunError, match=r"run/model.keras: cannot load the model"):
        training.load_run(run_copy).load_model()


def test_zero_length_clips_give_finite_predictions(tiny_run):
    from .conftest import features

    model = training.load_run(tiny_run).load_model(compile=False)
    batch = features(batch=3, frames=4)
    for m in DIMS:
        batch[f"{m}_length"][:] = 0
    out = model.predict(batch, verbose=0)
    assert np.isfinite(out["emotion"]).all() and np.isfinite(out["relevance"]).all()
    np.testing.assert_allclose(out["emotion"].sum(axis=-1), 1.0, atol=1e-5)


def test_time_axis_of_zero_frames_in_every_modality():
    from .conftest import features

    model = models.build_model("mre", feature_dims=DIMS, num_classes=3, hidden_dim=8, compile=False)
    out = model(features(batch=2, frames=0))
    assert np.isfinite(out["emotion"].numpy()).all()


def test_run_config_with_a_bad_model_config(run_copy):
    path = os.path.join(run_copy, "config.json")
    with open(path) as f:
        record = json.load(f)
    record["model_config"]["hidden_dim"] = "x"
    with open(path, "w") as f:
        json.dump(record, f)
    with pytest.raises(RunError, match=r"run/config.json: invalid model_config: hidden_dim='x': expected int, got str"):
        training.load_run(run_copy)


def test_truncated_run_config(run_copy):
    path = os.path.join(run_copy, "config.json")
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text[: len(text) // 2])
    with pytest.raises(RunError, match=r"run/config.json: unreadable run config: "):
        training.load_run(run_copy)
