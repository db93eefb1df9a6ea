"""The demo end to end (small) and `evaluate --seeds`."""

import json
import os

import numpy as np
import pytest

from keras_mre import cli

pytestmark = pytest.mark.slow


def test_demo_small(tmp_path, capsys):
    out = tmp_path / "demo"
    status = cli.main(["demo", "--out", str(out), "--num-clips", "150", "--epochs", "1"])
    assert status == 0
    text = capsys.readouterr().out
    assert "5/5 one prediction through the exported SavedModel" in text
    assert "relevance weights H: text " in text
    assert "Demo finished in" in text
    assert (out / "run" / "eval" / "test" / "metrics.json").exists()
    assert (out / "export" / "mre" / "1" / "saved_model.pb").exists()
    # A second call reuses the data and the finished run.
    assert cli.main(["demo", "--out", str(out), "--num-clips", "150", "--epochs", "1"]) == 0
    assert "reusing the finished run" in capsys.readouterr().out


def test_demo_refuses_a_foreign_directory(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("x")
    assert cli.main(["demo", "--out", str(tmp_path)]) == 2
    assert "which the demo did not write" in capsys.readouterr().err


def test_evaluate_seeds(trained_run, small_data, capsys):
    status = cli.main(["evaluate", "--run", trained_run, "--data", small_data, "--seeds", "2",
                       "--first-seed", "21"])
    assert status == 0
    with open(os.path.join(trained_run, "eval", "test", "seeds.json")) as f:
        result = json.load(f)
    assert result["seeds"] == [21, 22]
    accuracies = [result["per_seed"][s]["accuracy"] for s in ("21", "22")]
    assert result["summary"]["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert result["summary"]["accuracy"]["std"] == pytest.approx(np.std(accuracies))
    for seed in (21, 22):
        with open(os.path.join(trained_run, "seeds", f"seed_{seed}", "config.json")) as f:
            record = json.load(f)
        assert record["training"]["seed"] == seed
        assert record["model_config"]["hidden_dim"] == 16
    assert "2 seeds on test (mean ± std)" in capsys.readouterr().out
