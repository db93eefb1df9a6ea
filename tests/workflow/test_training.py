"""train(): run files, TensorBoard logs, refusal of bad configs and run dirs."""

import glob
import json
import os

import numpy as np
import pytest

from keras_mre import training
from keras_mre.errors import ConfigError
from keras_mre.errors import DataError
from keras_mre.errors import RunError


def _tag_names(log_dir):
    import tensorflow as tf

    tags = {}
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, value)
    return tags


def test_run_files(trained_run, small_data):
    with open(os.path.join(trained_run, "config.json")) as f:
        record = json.load(f)
    assert record["format"] == "keras-mre-run"
    assert record["data"]["path"] == os.path.abspath(small_data)
    assert record["model_config"]["model"] == "mre"
    assert record["model_config"]["feature_dims"] == {"text": 12, "audio": 6, "vision": 5}
    assert record["model_config"]["hidden_dim"] == 16
    assert record["training"]["batch_size"] == 16 and record["training"]["seed"] == 7
    assert record["training"]["bucket_by"] is None
    with open(os.path.join(trained_run, "history.json")) as f:
        history = json.load(f)
    assert len(history["history"]["val_f1_weighted"]) == 2
    for key in ("loss", "ce", "rs", "cnce", "accuracy", "f1_weighted"):
        assert key in history["history"]
    best = history["best_epoch"]
    values = history["history"]["val_f1_weighted"]
    assert values[best - 1] == max(values)
    assert history["resumed_from_epoch"] == 0
    assert os.path.isfile(os.path.join(trained_run, "model.keras"))
    assert not os.path.exists(os.path.join(trained_run, "backup"))
    assert not glob.glob(os.path.join(trained_run, "*.tmp*"))


def test_loaded_model_has_best_weights(trained_run, small_data):
    import keras

    run = training.load_run(trained_run)
    model = run.load_model()
    best = keras.models.clone_model(model)
    best.set_weights(model.get_weights())
    best.load_weights(os.path.join(trained_run, "checkpoints", "best.weights.h5"))
    for a, b in zip(model.get_weights(), best.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_tensorboard_logs(trained_run):
    train_tags = _tag_names(os.path.join(trained_run, "logs", "train"))
    for tag in ("epoch_loss", "epoch_ce", "epoch_rs", "epoch_cnce", "epoch_accuracy",
                "epoch_f1_weighted", "epoch_learning_rate"):
        assert tag in train_tags, sorted(train_tags)
    assert any(tag.endswith("histogram") or "kernel" in tag for tag in train_tags)
    val_tags = _tag_names(os.path.join(trained_run, "logs", "validation"))
    assert "epoch_f1_weighted" in val_tags
    assert "confusion_matrix" in val_tags
    for m in ("text", "audio", "vision"):
        assert f"relevance/{m}" in val_tags


def test_finished_run_is_refused_without_overwrite(trained_run, small_data):
    with pytest.raises(RunError, match="holds a finished run; choose another --out or pass --overwrite"):
        training.train(small_data, trained_run, epochs=2, batch_size=16, seed=7,
                       config={"hidden_dim": 16}, verbose=0)


def test_unfinished_run_with_other_settings_is_refused(tmp_path, small_data, trained_run):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record = json.loads(open(os.path.join(trained_run, "config.json")).read())
    record["training"]["epochs"] = 99
    (run_dir / "config.json").write_text(json.dumps(record))
    (run_dir / "backup").mkdir()
    with pytest.raises(RunError, match="unfinished run with a different configuration"):
        training.train(small_data, str(run_dir), epochs=2, batch_size=16, seed=7,
                       config={"hidden_dim": 16}, verbose=0)


def test_not_a_run(tmp_path):
    with pytest.raises(RunError, match="run directory not found"):
        training.load_run(str(tmp_path / "missing"))
    with pytest.raises(RunError, match=r"not a keras-mre run \(no config.json"):
        training.load_run(str(tmp_path))
    (tmp_path / "config.json").write_text('{"hello": 1}')
    with pytest.raises(RunError, match="not a keras-mre run config"):
        training.load_run(str(tmp_path))
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(RunError, match="unreadable run config"):
        training.load_run(str(tmp_path))


def test_foreign_directory_is_not_overwritten(tmp_path, small_data):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RunError, match="is not empty and is not a keras-mre run"):
        training.train(small_data, str(tmp_path), epochs=1, verbose=0)
    assert (tmp_path / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"hidden_dim": 16, "colour": "red"}', r"config.json: unknown config key 'colour'"),
        ('{"hidden_dim": "sixteen"}', r"config.json: hidden_dim='sixteen': expected int"),
        ('{"dropout": 1.5}', r"config.json: dropout=1.5: expected a rate in \[0, 1\)"),
        ("[1, 2]", r"config.json: a config file must hold a JSON object, got list"),
        ('{"hidden_dim": 16,}', r"config.json: invalid JSON at line 1 column 19"),
        ('{"model": "nosuchmodel"}', r"nosuchmodel"),
        ('{"num_classes": 7}', r"num_classes=7 contradicts the data set"),
        ('{"feature_dims": {"text": 768, "audio": 33}}', r"feature_dims=.* contradicts the data set"),
    ],
)
def test_bad_config_files(tmp_path, small_data, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        training.train(small_data, str(tmp_path / "run"), config=str(path), verbose=0)
    assert not (tmp_path / "run").exists()


def test_config_file_and_model_name_must_agree(tmp_path, small_data):
    path = tmp_path / "c.json"
    path.write_text('{"model": "mre"}')
    with pytest.raises(ConfigError, match="names model 'mre' but the model 'lmf' was requested"):
        training.train(small_data, str(tmp_path / "run"), model="lmf", config=str(path), verbose=0)


def test_missing_config_file_and_bad_arguments(tmp_path, small_data):
    with pytest.raises(ConfigError, match="nope.json: config file not found"):
        training.train(small_data, str(tmp_path / "r"), config=str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match="epochs must be a positive integer, got 0"):
        training.train(small_data, str(tmp_path / "r"), epochs=0)
    with pytest.raises(ConfigError, match="strategy='tpu': expected one of auto, mirrored"):
        training.train(small_data, str(tmp_path / "r"), strategy="tpu")
    with pytest.raises(DataError, match="data set directory not found"):
        training.train(str(tmp_path / "nodata"), str(tmp_path / "r"))


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "TF_CONFIG is not set"),
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('["a"]', "TF_CONFIG must be a JSON object, got list"),
        ('{"task": {"type": "worker", "index": 0}}', "'cluster' must be a non-empty object"),
        ('{"cluster": {"worker": "localhost:1"}, "task": {"type": "worker", "index": 0}}',
         r"cluster.worker must be a non-empty list"),
        ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}',
         r"cluster.worker entry 'localhost' is not host:port"),
        ('{"cluster": {"worker": ["a:1"]}}', "'task' must be an object"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}',
         r"task.type 'ps' is not a job of the cluster \['worker'\]"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
         "task.index 2 is out of range for job 'worker' with 2 tasks"),
    ],
)
def test_malformed_tf_config(monkeypatch, value, message):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match=message):
        training.parse_tf_config(value)


def test_multiworker_strategy_needs_tf_config(monkeypatch, tmp_path, small_data):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}')
    with pytest.raises(ConfigError, match="task.type 'chief' is not a job of the cluster"):
        training.train(small_data, str(tmp_path / "r"), strategy="multiworker", verbose=0)


def test_chief_selection():
    assert training.is_chief(None)
    worker0 = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
    assert training.is_chief(worker0)
    chief = {"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}
    assert not training.is_chief(chief)


def test_empty_train_split_is_refused(tmp_path):
    from .conftest import write_small_dataset

    data_dir = str(tmp_path / "empty")
    write_small_dataset(data_dir, num_clips=0, splits=("train", "test"))
    with pytest.raises(DataError, match="split 'train' holds no clips; nothing to train on"):
        training.train(data_dir, str(tmp_path / "run"), verbose=0)
    assert not (tmp_path / "run").exists()


def test_bucket_by_is_checked_and_recorded(tmp_path, small_data):
    with pytest.raises(ConfigError, match=r"^train: bucket_by names unknown modality 'face'"):
        training.train(small_data, str(tmp_path / "bad"), bucket_by="face")
    assert not os.path.exists(tmp_path / "bad")
    run_dir = str(tmp_path / "run")
    result = training.train(small_data, run_dir, epochs=1, batch_size=8, config={"hidden_dim": 8},
                            histogram_freq=0, verbose=0, bucket_by=["audio", "vision"])
    with open(os.path.join(run_dir, "config.json")) as f:
        assert json.load(f)["training"]["bucket_by"] == ["audio", "vision"]
    with open(os.path.join(run_dir, "history.json")) as f:
        assert np.isfinite(json.load(f)["history"]["loss"][0])
    assert result.epochs_run == 1


def test_non_finite_loss_stops_without_a_model(tmp_path):
    from keras_mre import data

    # A learning rate near float32's largest value: the first update sends
    # the weights to +-inf, so the second batch's loss is NaN on any CPU
    # (huge features alone are not enough: with TensorFlow's oneDNN
    # optimizations, an AVX-512 machine kept the loss of 3e38 inputs finite).
    dims = {"text": 4, "audio": 3}
    rng = np.random.default_rng(0)
    clips = {split: [data.Clip(id=f"{split}{i}", label=i % 2,
                               features={m: rng.normal(size=(2, d)) for m, d in dims.items()})
                     for i in range(8)]
             for split in ("train", "valid")}
    data_dir = str(tmp_path / "plain")
    data.write_dataset(data_dir, clips, feature_dims=dims, class_names=["a", "b"],
                       max_lengths={m: 2 for m in dims}, name="plain", progress=False)
    run_dir = str(tmp_path / "run")
    with pytest.raises(RunError, match=r"run: the training loss became NaN at epoch 1, batch 2; "
                                       r"training stopped and no model.keras was written"):
        training.train(data_dir, run_dir, epochs=2, batch_size=4, config={"hidden_dim": 8},
                       learning_rate=1e38, histogram_freq=0, verbose=0)
    assert not os.path.exists(os.path.join(run_dir, "model.keras"))
