"""The `keras-mre` command on hostile inputs: one line, status 2, nothing left behind.

Most cases call `keras_mre.cli.main` in this process (an exception escaping
it is a traceback the user would see); a few run the installed program to
check the real process: exit status, stderr, no traceback.
"""

import json
import os
import pickle
import shutil

import numpy as np
import pytest

from .conftest import TINY_CONFIG
from .conftest import assert_one_line_error
from .conftest import run_cli_subprocess

TRAIN = ("--epochs", "1", "--batch-size", "8", "--verbose", "0", "--histogram-freq", "0")


def edit_info(path, change):
    target = os.path.join(path, "dataset.json")
    with open(target) as f:
        stored = json.load(f)
    change(stored)
    with open(target, "w") as f:
        json.dump(stored, f)


def config_file(tmp_path, content=None):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(TINY_CONFIG if content is None else content))
    return str(path)


# ------------------------------------------------------------ real processes


@pytest.fixture(scope="module")
def newer_format_process(tiny_data, tmp_path_factory):
    """`keras-mre train` run as a process on a data set of a newer format."""
    base = tmp_path_factory.mktemp("newer")
    data_dir = str(base / "data")
    shutil.copytree(tiny_data, data_dir)
    edit_info(data_dir, lambda d: d.update(format_version=2))
    out = base / "run"
    result = run_cli_subprocess(["train", "--data", data_dir, "--out", str(out), *TRAIN])
    return result, out


@pytest.mark.slow
def test_process_newer_data_set_format(newer_format_process):
    result, out = newer_format_process
    assert_one_line_error(result.returncode, result.stderr,
                          r"data/dataset.json: format_version 2 is newer than this keras-mre reads \(1\)")
    assert result.stdout == ""
    assert not out.exists()


@pytest.mark.slow
def test_process_error_is_all_that_stderr_shows(newer_format_process):
    result, _ = newer_format_process
    assert result.stderr.splitlines() == [
        line for line in result.stderr.splitlines() if line.startswith("keras-mre: error:")]


@pytest.mark.slow
def test_process_malicious_pickle(tmp_path):
    marker = tmp_path / "pwned"
    payload = tmp_path / "mosi.pkl"
    payload.write_bytes(pickle.dumps({"train": _Payload(str(marker)), "valid": {}, "test": {}}))
    out = tmp_path / "converted"
    result = run_cli_subprocess(["convert", "mmsa", str(payload), "--out", str(out)])
    assert_one_line_error(result.returncode, result.stderr,
                          r"mosi.pkl: refused to load: the pickle asks for global (posix|os)\.system",
                          r"nothing was executed")
    assert not marker.exists()
    assert not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["mosi.pkl"]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---------------------------------------------------------------- data sets


def test_train_on_a_directory_without_dataset_json(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    status, out, err = cli("train", "--data", tmp_path / "empty", "--out", tmp_path / "run", *TRAIN)
    assert_one_line_error(status, err, r"empty/dataset.json: not found; .*empty is not a keras-mre data set")
    assert not (tmp_path / "run").exists()


def test_train_on_an_empty_dataset_json(cli, data_copy, tmp_path):
    open(os.path.join(data_copy, "dataset.json"), "w").close()
    status, _, err = cli("train", "--data", data_copy, "--out", tmp_path / "run", *TRAIN)
    assert_one_line_error(status, err, r"data/dataset.json: invalid JSON at line 1 column 1")
    assert not (tmp_path / "run").exists()


def test_train_with_a_missing_shard(cli, data_copy, tmp_path):
    os.remove(os.path.join(data_copy, "valid-00001-of-00002.tfrecord"))
    status, _, err = cli("train", "--data", data_copy, "--out", tmp_path / "run",
                         "--config", config_file(tmp_path), *TRAIN)
    assert_one_line_error(
        status, err,
        r"valid-00001-of-00002.tfrecord: shard listed in dataset.json for split 'valid' is missing")


def damage(path, how):
    with open(path, "rb") as f:
        blob = bytearray(f.read())
    if how == "empty":
        blob = b""
    elif how == "truncated":
        blob = blob[: len(blob) // 2]
    else:
        blob[len(blob) // 2] ^= 0x10
    with open(path, "wb") as f:
        f.write(bytes(blob))


@pytest.mark.parametrize("how", ["empty", "truncated", "bitflip"])
def test_train_on_damaged_shard_names_the_shard(cli, data_copy, tmp_path, how):
    damage(os.path.join(data_copy, "train-00001-of-00002.tfrecord"), how)
    status, _, err = cli("train", "--data", data_copy, "--out", tmp_path / "run",
                         "--config", config_file(tmp_path), *TRAIN)
    assert_one_line_error(status, err, r"data/train-00001-of-00002.tfrecord: ")
    assert not os.path.exists(tmp_path / "run" / "model.keras")


def test_evaluate_on_foreign_shard_is_one_clean_line(cli, tiny_run, data_copy, synth_data):
    foreign = sorted(f for f in os.listdir(synth_data) if f.startswith("test-"))[0]
    shutil.copy(os.path.join(synth_data, foreign),
                os.path.join(data_copy, "test-00000-of-00002.tfrecord"))
    status, _, err = cli("evaluate", "--run", tiny_run, "--data", data_copy)
    assert_one_line_error(status, err, r"data/test-00000-of-00002.tfrecord: record \d+ .*field 'text'")


def test_evaluate_on_a_data_set_with_other_classes(cli, tiny_run, synth_data):
    status, _, err = cli("evaluate", "--run", tiny_run, "--data", synth_data)
    assert_one_line_error(status, err, r"sdme")
    assert not os.path.exists(os.path.join(tiny_run, "eval"))


# ------------------------------------------------------------- runs, configs


def test_unknown_model_and_bad_config_value(cli, tiny_data, tmp_path):
    status, _, err = cli("train", "--data", tiny_data, "--out", tmp_path / "a", "--model", "gpt", *TRAIN)
    assert_one_line_error(status, err, r"model='gpt': unknown model; available: .*mre")
    status, _, err = cli("train", "--data", tiny_data, "--out", tmp_path / "b",
                         "--config", config_file(tmp_path, {"hidden_dim": "wide"}), *TRAIN)
    assert_one_line_error(status, err, r"config.json: hidden_dim='wide': expected int, got str")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_bucket_by_an_unknown_or_empty_modality(cli, capsys, tiny_data, tmp_path):
    status, _, err = cli("train", "--data", tiny_data, "--out", tmp_path / "a",
                         "--bucket-by", "audio,face", *TRAIN)
    assert_one_line_error(status, err, r"train: bucket_by names unknown modality 'face'; data set .*tiny has")
    assert not (tmp_path / "a").exists()
    with pytest.raises(SystemExit) as exit_info:
        cli("train", "--data", tiny_data, "--out", tmp_path / "b", "--bucket-by", "audio,", *TRAIN)
    assert exit_info.value.code == 2
    assert "expected comma-separated modality names, got 'audio,'" in capsys.readouterr().err


def test_export_of_a_run_with_an_empty_model_file(cli, run_copy, tmp_path):
    open(os.path.join(run_copy, "model.keras"), "w").close()
    status, _, err = cli("export", "--run", run_copy, "--out", tmp_path / "export")
    assert_one_line_error(status, err, r"run/model.keras: cannot load the model")
    assert not os.path.exists(tmp_path / "export" / "mre" / "1")


def test_export_of_a_run_with_a_newer_format(cli, run_copy, tmp_path):
    path = os.path.join(run_copy, "config.json")
    with open(path) as f:
        record = json.load(f)
    record["format_version"] = 9
    with open(path, "w") as f:
        json.dump(record, f)
    status, _, err = cli("export", "--run", run_copy, "--out", tmp_path / "export")
    assert_one_line_error(status, err, r"run/config.json: run format version 9 is newer")


def test_bad_option_values_are_usage_errors(cli, tiny_data, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli("train", "--data", tiny_data, "--out", tmp_path / "r", "--epochs", "0")
    assert exit_info.value.code == 2


# ------------------------------------------------------------------- convert


def mmsa_content(n=4, frames=3):
    rng = np.random.default_rng(0)
    content = {}
    for split in ("train", "valid", "test"):
        content[split] = {
            "text": rng.normal(size=(n, frames, 8)),
            "audio": rng.normal(size=(n, frames, 5)),
            "vision": rng.normal(size=(n, frames, 4)),
            "regression_labels": np.linspace(-2, 2, n),
            "id": np.array([f"{split}{i}" for i in range(n)], dtype=object),
        }
    return content


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("valid"), r"no split 'valid'; found keys \['test', 'train'\]"),
    (lambda c: c["test"].update(audio=np.ones((4, 3))),
     r"split 'test' key 'audio' has shape \(4, 3\), expected \[4, frames, dim\]"),
    (lambda c: c["train"].update(vision=np.empty((4, 3, 4), dtype=object)),
     r"split 'train' key 'vision' has dtype object, expected numbers"),
    (lambda c: c["train"].update(text=c["train"]["text"][:2]),
     r"split 'train' key 'text' has shape \(2, 3, 8\), expected \[4, frames, dim\]"),
])
def test_convert_broken_mmsa_pickles(cli, tmp_path, change, message):
    content = mmsa_content()
    change(content)
    path = tmp_path / "broken.pkl"
    path.write_bytes(pickle.dumps(content, protocol=4))
    status, _, err = cli("convert", "mmsa", path, "--out", tmp_path / "out", "--no-progress")
    assert_one_line_error(status, err, r"broken.pkl: " + message)
    assert sorted(os.listdir(tmp_path)) == ["broken.pkl"]


def test_convert_an_empty_file(cli, tmp_path):
    path = tmp_path / "empty.pkl"
    path.write_bytes(b"")
    status, _, err = cli("convert", "mmsa", path, "--out", tmp_path / "out", "--no-progress")
    assert_one_line_error(status, err, r"empty.pkl: ")
    assert sorted(os.listdir(tmp_path)) == ["empty.pkl"]


def test_convert_a_good_pickle_still_works(cli, tmp_path):
    path = tmp_path / "good.pkl"
    path.write_bytes(pickle.dumps(mmsa_content(), protocol=4))
    status, out, err = cli("convert", "mmsa", path, "--out", tmp_path / "out", "--no-progress")
    assert status == 0, err
    assert "wrote" in out


def test_synth_into_a_foreign_directory_is_refused(cli, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("precious")
    status, _, err = cli("synth", "--out", target, "--num-clips", "12", "--overwrite", "--no-progress")
    assert_one_line_error(status, err, r"mine: exists and is not a keras-mre data set \(no dataset.json\); refusing to replace it")
    assert (target / "thesis.tex").read_text() == "precious"


def test_debug_shows_the_traceback_instead(cli, tmp_path):
    from keras_mre.errors import DataError

    with pytest.raises(DataError, match=r"nowhere: data set directory not found"):
        cli("--debug", "train", "--data", tmp_path / "nowhere", "--out", tmp_path / "run")


def test_demo_into_a_foreign_directory_is_refused(cli, tmp_path):
    target = tmp_path / "demo"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    status, _, err = cli("demo", "--out", target, "--num-clips", "30", "--epochs", "1")
    assert_one_line_error(status, err, r"demo: exists and holds \['notes.txt'\], which the demo did not write; choose another --out")
    assert sorted(os.listdir(target)) == ["notes.txt"]


def test_evaluate_an_unknown_split(cli, tiny_run, tiny_data):
    status, _, err = cli("evaluate", "--run", tiny_run, "--data", tiny_data, "--split", "holdout")
    assert_one_line_error(status, err, r"unknown split 'holdout'; the data set has \['test', 'train', 'valid'\]")
    assert not os.path.exists(os.path.join(tiny_run, "eval", "holdout"))


def write_with_an_empty_split(path, empty):
    from keras_mre import data

    from .conftest import CLASSES
    from .conftest import DIMS
    from .conftest import MAX_LENGTHS
    from .conftest import tiny_clips

    clips = {s: [] if s == empty else tiny_clips(s) for s in ("train", "valid", "test")}
    return data.write_dataset(path, clips, feature_dims=DIMS, class_names=CLASSES,
                              max_lengths=MAX_LENGTHS, name="holes", progress=False)


def test_train_on_an_empty_train_split(cli, tmp_path):
    write_with_an_empty_split(tmp_path / "data", "train")
    status, _, err = cli("train", "--data", tmp_path / "data", "--out", tmp_path / "run",
                         "--config", config_file(tmp_path), *TRAIN)
    assert_one_line_error(status, err, r"data: split 'train' holds no clips; nothing to train on")
    assert not (tmp_path / "run").exists()


def test_evaluate_an_empty_split(cli, tiny_run, tmp_path):
    write_with_an_empty_split(tmp_path / "data", "test")
    status, _, err = cli("evaluate", "--run", tiny_run, "--data", tmp_path / "data")
    assert_one_line_error(status, err, r"data: split 'test' holds no clips; nothing to evaluate")
    assert not os.path.exists(os.path.join(tiny_run, "eval", "test"))
