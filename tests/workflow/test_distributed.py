"""Multi-worker training, dead workers, kill -9 resume and determinism (subprocesses)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow


def _free_ports(count):
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [s.getsockname()[1] for s in sockets]
    for sock in sockets:
        sock.close()
    return ports


def _start(args, env=None):
    full_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    full_env.pop("TF_CONFIG", None)
    full_env.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "keras_mre.cli", *args], cwd=REPO, env=full_env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(process, timeout=420):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _weights(run_dir):
    from keras_mre import training

    return training.load_run(run_dir).load_model(compile=False).get_weights()


@pytest.fixture
def no_dropout(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hidden_dim": 16, "dropout": 0.0}))
    return str(path)


@pytest.mark.parametrize("bucket_by", [None, "audio"])
def test_two_workers_match_one_process(tmp_path, small_data, no_dropout, bucket_by):
    # Same global batch (8) and shuffle seed; dropout off so that both
    # runs compute the same function. Each worker gets half of every global
    # batch; gradients are all-reduced, so the weights after one epoch must
    # equal the single-process weights up to float32 summation order. With
    # bucket_by, both must form the same length-sorted batches.
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    # 40 training clips: 5 full global batches of 8, none left out.
    common = ["train", "--data", small_data, "--config", no_dropout, "--epochs", "1",
              "--batch-size", "8", "--seed", "5", "--histogram-freq", "0", "--verbose", "0"]
    if bucket_by:
        common += ["--bucket-by", bucket_by]
    workers = [
        _start(common + ["--out", str(tmp_path / "multi"), "--strategy", "multiworker",
                         "--cluster-timeout", "300"],
               env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
        for i in range(2)
    ]
    from keras_mre import training

    training.train(small_data, str(tmp_path / "single"), config=no_dropout, epochs=1, batch_size=8,
                   seed=5, strategy="none", histogram_freq=0, verbose=0, bucket_by=bucket_by)
    for process in workers:
        status, out, err = _finish(process)
        assert status == 0, err[-3000:]
    assert not os.path.exists(tmp_path / "multi" / ".workers")
    multi_weights = _weights(str(tmp_path / "multi"))
    single_weights = _weights(str(tmp_path / "single"))
    assert len(multi_weights) == len(single_weights)
    for a, b in zip(multi_weights, single_weights):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    multi = json.loads((tmp_path / "multi" / "history.json").read_text())["history"]
    single = json.loads((tmp_path / "single" / "history.json").read_text())["history"]
    assert multi["loss"] == pytest.approx(single["loss"], abs=1e-4)


def test_missing_worker_ends_with_a_clear_error(tmp_path, small_data):
    ports = _free_ports(2)
    tf_config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                 "task": {"type": "worker", "index": 0}}
    start = time.time()
    process = _start(["train", "--data", small_data, "--out", str(tmp_path / "run"),
                      "--strategy", "multiworker", "--cluster-timeout", "5", "--epochs", "1"],
                     env={"TF_CONFIG": json.dumps(tf_config)})
    status, _, err = _finish(process, timeout=180)
    assert status != 0
    assert time.time() - start < 150
    assert "keras-mre: error: multi-worker cluster not complete after 5 s" in err
    assert f"worker:1 127.0.0.1:{ports[1]}" in err


def test_sigkill_then_rerun_resumes(tmp_path, small_data):
    run_dir = tmp_path / "run"
    args = ["train", "--data", small_data, "--out", str(run_dir), "--epochs", "8",
            "--patience", "8", "--batch-size", "8", "--seed", "3", "--verbose", "2",
            "--config", _write(tmp_path, {"hidden_dim": 16})]
    process = _start(args)
    metadata = run_dir / "backup" / "training_metadata.json"
    deadline = time.time() + 300
    epoch = 0
    while time.time() < deadline and process.poll() is None:
        if metadata.exists():
            try:
                epoch = json.loads(metadata.read_text())["epoch"]
            except (ValueError, KeyError):
                epoch = 0
            if epoch >= 1:
                break
        time.sleep(0.05)
    assert process.poll() is None, "training ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (run_dir / "model.keras").exists()

    status, out, err = _finish(_start(args))
    assert status == 0, err[-3000:]
    assert "Resuming" in out and "from its backup after epoch" in out
    history = json.loads((run_dir / "history.json").read_text())
    assert history["resumed_from_epoch"] >= 1
    assert history["epochs"] == 8
    assert len(history["history"]["loss"]) == 8
    assert history["epochs_run_last_call"] == 8 - history["resumed_from_epoch"]
    assert (run_dir / "model.keras").exists() and not (run_dir / "backup").exists()


def _write(tmp_path, config):
    path = tmp_path / "model_config.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_deterministic_runs_give_identical_metrics(tmp_path, small_data):
    # Op determinism is process-wide, so both runs share one subprocess
    # (not the test process).
    code = (
        "import sys\n"
        "from keras_mre import training\n"
        "for run in sys.argv[2:]:\n"
        "    training.train(sys.argv[1], run, epochs=2, batch_size=8, seed=11, deterministic=True,\n"
        "                   config={'hidden_dim': 16}, histogram_freq=0, verbose=0)\n"
    )
    runs = [str(tmp_path / "run0"), str(tmp_path / "run1")]
    result = subprocess.run(
        [sys.executable, "-c", code, small_data, *runs], cwd=REPO, capture_output=True, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), timeout=420,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    first = json.loads((tmp_path / "run0" / "history.json").read_text())["history"]
    second = json.loads((tmp_path / "run1" / "history.json").read_text())["history"]
    assert first == second
