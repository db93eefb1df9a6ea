"""evaluate_run outputs and the CLI's one-line errors."""

import json
import os

import numpy as np
import pytest

from keras_mre import cli
from keras_mre import evaluation
from keras_mre import training
from keras_mre.errors import DataError

from .conftest import run_cli
from .conftest import write_small_dataset


@pytest.fixture(scope="module")
def evaluated(trained_run, small_data):
    return evaluation.evaluate_run(trained_run, small_data, "test", verbose=False)


def test_metrics_json_matches_predictions(evaluated, trained_run, small_data):
    from keras_mre import data

    out_dir = os.path.join(trained_run, "eval", "test")
    for name in ("metrics.json", "relevance.json", "confusion_matrix.png", "relevance.png"):
        assert os.path.isfile(os.path.join(out_dir, name)), name
    with open(os.path.join(out_dir, "metrics.json")) as f:
        metrics = json.load(f)
    model = training.load_run(trained_run).load_model()
    labels, predicted = [], []
    for features, batch_labels in data.load_dataset(small_data, "test", 7, shuffle=False):
        predicted.append(model.predict_on_batch(features)["emotion"].argmax(-1))
        labels.append(batch_labels["emotion"].numpy())
    labels, predicted = np.concatenate(labels), np.concatenate(predicted)
    assert metrics["num_examples"] == 40
    assert metrics["accuracy"] == pytest.approx(np.mean(labels == predicted))
    assert 0.0 <= metrics["f1_weighted"] <= 1.0
    assert metrics["f1_weighted"] == pytest.approx(evaluation.weighted_f1(labels, predicted, 3))
    assert set(metrics["per_class"]) == {"class0", "class1", "class2"}
    assert np.sum(metrics["confusion_matrix"]) == 40
    assert "regression" not in metrics


def test_relevance_json(evaluated, trained_run):
    with open(os.path.join(trained_run, "eval", "test", "relevance.json")) as f:
        relevance = json.load(f)
    assert relevance["modalities"] == ["text", "audio", "vision"]
    overall = relevance["mean_relevance_overall"]
    # H is a distribution over modalities (softmax): the means sum to 1.
    assert sum(overall.values()) == pytest.approx(1.0, abs=1e-5)
    for name in ("class0", "class1", "class2"):
        assert set(relevance["mean_relevance"][name]) == {"text", "audio", "vision"}
    for m in ("text", "audio", "vision"):
        assert 0.0 <= relevance["agreement"][m]["overall"] <= 1.0
        assert np.sum(relevance["agreement"][m]["confusion_matrix"]) == 40
        assert 0.0 <= relevance["label_agreement"][m]["labels_agree"] <= 1.0


def test_regression_metrics_on_scored_data(trained_run, scored_data):
    metrics = evaluation.evaluate_run(trained_run, scored_data, "test", verbose=False)
    regression = metrics["regression"]
    for key in ("Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score",
                "Mult_acc_5", "Mult_acc_7", "MAE", "Corr"):
        assert key in regression
    assert regression["num_examples"] == 40 and regression["num_nonzero"] == 39
    assert regression["predicted_score"].startswith("expected class score")
    assert len(regression["class_score_means"]) == 3


def test_data_with_other_dims_is_refused(trained_run, tmp_path):
    other = str(tmp_path / "other")
    write_small_dataset(other, num_clips=4, dims={"text": 12, "audio": 7, "vision": 5})
    with pytest.raises(DataError, match=r"feature dims .*'audio': 7.* do not match the model of run"):
        evaluation.evaluate_run(trained_run, other, "test", verbose=False)
    with pytest.raises(DataError, match="unknown split 'dev'"):
        evaluation.evaluate_run(trained_run, None, "dev", verbose=False)


def _main(capsys, argv):
    status = cli.main(argv)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "--run", "{tmp}"], r"{tmp}: not a keras-mre run \(no config.json"),
        (["export", "--run", "{tmp}/missing", "--out", "{tmp}/e"], r"{tmp}/missing: run directory not found"),
        (["train", "--data", "{tmp}/nodata", "--out", "{tmp}/r"], r"{tmp}/nodata: data set directory not found"),
        (["train", "--data", "{data}", "--out", "{tmp}/r", "--config", "{tmp}/bad.json"],
         r"{tmp}/bad.json: unknown config key 'layers'"),
        (["train", "--data", "{data}", "--out", "{tmp}/r", "--config", "{tmp}/typed.json"],
         r"{tmp}/typed.json: rank=2.5: expected int"),
        (["train", "--data", "{data}", "--out", "{tmp}/r", "--strategy", "multiworker"],
         r"TF_CONFIG is not valid JSON"),
        (["evaluate", "--run", "{run}", "--data", "{other}"], r"feature dims .* do not match the model of run"),
        (["export", "--run", "{run}", "--out", "{exp}"], r"mre/1: export exists; pass --overwrite"),
    ],
)
def test_cli_errors_are_one_line(capsys, monkeypatch, tmp_path, small_data, trained_run, argv, message):
    monkeypatch.setenv("TF_CONFIG", "{broken")
    (tmp_path / "bad.json").write_text('{"layers": 3}')
    (tmp_path / "typed.json").write_text('{"rank": 2.5}')
    other = str(tmp_path / "other")
    if "{other}" in argv:
        write_small_dataset(other, num_clips=4, dims={"text": 12, "audio": 6, "vision": 9})
    exp = tmp_path / "exp" / "mre" / "1"
    exp.mkdir(parents=True)
    values = {"tmp": str(tmp_path), "data": small_data, "run": trained_run, "other": other,
              "exp": str(tmp_path / "exp")}
    argv = [a.format(**values) for a in argv]
    status, out, err = _main(capsys, argv)
    assert status == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("keras-mre: error: ")
    import re

    assert re.search(message.format(**values), lines[0]), lines[0]
    assert "Traceback" not in err + out


def test_cli_debug_shows_the_exception(tmp_path, capsys):
    with pytest.raises(Exception, match="not a keras-mre run"):
        cli.main(["--debug", "evaluate", "--run", str(tmp_path)])
    with pytest.raises(Exception, match="not a keras-mre run"):
        cli.main(["evaluate", "--run", str(tmp_path), "--debug"])


def test_cli_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--data", "x", "--out", "y", "--epochs", "zero"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "keras-mre: error: argument --epochs: expected a positive integer, got 'zero'" in err


def test_cli_subprocess_error_has_no_traceback(tmp_path):
    result = run_cli(["export", "--run", str(tmp_path), "--out", str(tmp_path / "e")], timeout=300)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("keras-mre:")]
    assert error_lines == [f"keras-mre: error: {tmp_path}: not a keras-mre run "
                           "(no config.json; train one with `keras-mre train`)"]


def test_cli_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "synth", "extract", "convert", "train", "evaluate", "export"):
        assert command in out
