"""Faults: SIGKILL in the middle of every writer, a full disk, a dead worker.

A killed writer must never leave output that the next command takes as
complete: the next load / convert / export / train either fails with a
clear error or redoes the work. Each kill happens at a fixed point inside a
subprocess (the process sends itself SIGKILL), so the tests are exact.
"""

import contextlib
import json
import os
import pickle
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_mre import data
from keras_mre import export
from keras_mre import training
from keras_mre.errors import DataError
from keras_mre.errors import RunError

from .conftest import REPO
from .conftest import TINY_CONFIG
from .conftest import assert_one_line_error

KILL_AFTER = """
import os, signal
def _die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
"""


def run_killed(body, timeout=240):
    """Run `body` in a fresh interpreter; it must end by SIGKILL."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", KILL_AFTER + textwrap.dedent(body)],
                            capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    assert result.returncode == -signal.SIGKILL, (result.stdout + result.stderr)[-3000:]
    return result


def kill_at_record(count):
    """Code that SIGKILLs the process when the writer encodes record `count`."""
    return f"""
from keras_mre.data import records
_encode = records.encode_example
_seen = [0]
def _counting(*args, **kwargs):
    _seen[0] += 1
    if _seen[0] == {count}:
        _die()
    return _encode(*args, **kwargs)
records.encode_example = _counting
"""


def mmsa_pickle(path, n=12):
    rng = np.random.default_rng(0)
    content = {split: {
        "text": rng.normal(size=(n, 4, 8)), "audio": rng.normal(size=(n, 5, 3)),
        "vision": rng.normal(size=(n, 5, 2)), "regression_labels": np.linspace(-2, 2, n),
        "id": np.array([f"{split}{i}" for i in range(n)], dtype=object),
    } for split in ("train", "valid", "test")}
    path.write_bytes(pickle.dumps(content, protocol=4))


@pytest.mark.slow
def test_sigkill_during_convert_leaves_no_data_set(tmp_path, cli):
    source = tmp_path / "mosi.pkl"
    mmsa_pickle(source)
    out = tmp_path / "out"
    run_killed(kill_at_record(20) + f"""
from keras_mre import cli
cli.main(["convert", "mmsa", {str(source)!r}, "--out", {str(out)!r}, "--shard-size", "4",
          "--no-progress"])
""")
    assert not out.exists()
    leftovers = [n for n in os.listdir(tmp_path) if n not in ("mosi.pkl",)]
    assert all(n.startswith(".out.") and n.endswith(".partial") for n in leftovers), leftovers
    with pytest.raises(DataError, match=r"out: data set directory not found"):
        data.load_info(out)
    status, _, err = cli("train", "--data", out, "--out", tmp_path / "run")
    assert_one_line_error(status, err, r"out: data set directory not found")
    # The next convert redoes the work, gives a complete data set, and
    # removes (and names) the killed writer's temporary directory.
    status, _, err = cli("convert", "mmsa", source, "--out", out, "--no-progress")
    assert status == 0, err
    assert data.verify_dataset(out) == {"train": 12, "valid": 12, "test": 12}
    assert sorted(os.listdir(tmp_path)) == ["mosi.pkl", "out"]
    assert f"removed 1 temporary directory left by killed writers: {leftovers[0]}" in err


@pytest.mark.slow
def test_sigkill_while_overwriting_keeps_the_old_data_set(tmp_path, tiny_data):
    target = tmp_path / "data"
    shutil.copytree(tiny_data, target)
    before = sorted(os.listdir(target))
    run_killed(kill_at_record(30) + f"""
from keras_mre_pipelines import synth
synth.synthesize({str(target)!r}, preset="sdme", num_clips=40, shard_size=8, overwrite=True,
                 progress=False)
""")
    assert sorted(os.listdir(target)) == before
    assert data.verify_dataset(target) == {"train": 16, "valid": 16, "test": 16}


@pytest.mark.slow
def test_sigkill_during_export_leaves_no_version(tmp_path, tiny_run, cli):
    base = tmp_path / "export"
    run_killed(f"""
import keras
_archive = type(keras.export.ExportArchive())
_write_out = _archive.write_out
def _write_then_die(self, *args, **kwargs):
    _write_out(self, *args, **kwargs)
    _die()
_archive.write_out = _write_then_die
from keras_mre import export
export.export_saved_model({tiny_run!r}, {str(base)!r}, name="mre", version=1)
""")
    model_base = base / "mre"
    assert not (model_base / "1").exists()
    # Only a hidden temporary directory, which TF Serving does not load.
    leftovers = os.listdir(model_base)
    assert len(leftovers) == 1 and leftovers[0].startswith(".tmp-1-")
    with pytest.raises(RunError, match=r"mre: holds no numbered version directory"):
        export.load_exported(model_base)
    status, _, err = cli("export", "--run", tiny_run, "--out", base)
    assert status == 0, err
    assert export.read_signature_description(model_base / "1")["model"] == "mre"
    # The next export removed the killed one's directory and said so.
    assert os.listdir(model_base) == ["1"]
    assert re.search(
        rf"keras-mre: warning: .*mre: removed 1 temporary directory left by "
        rf"killed exports: {re.escape(leftovers[0])}$", err, re.M), err


@pytest.mark.slow
def test_sigkill_during_training_then_resume(tmp_path, tiny_data, cli):
    run_dir = tmp_path / "run"
    arguments = dict(epochs=2, batch_size=8, seed=11, config=TINY_CONFIG, histogram_freq=0,
                     verbose=0)
    run_killed(f"""
import keras
class Killer(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            _die()
from keras_mre import training
training.train({tiny_data!r}, {str(run_dir)!r}, callbacks=[Killer()], **{arguments!r})
""")
    # The killed run is not taken for a finished one.
    assert not training.is_finished_run(run_dir)
    status, _, err = cli("export", "--run", run_dir, "--out", tmp_path / "export")
    assert_one_line_error(status, err, r"run: no model.keras; the run has not finished")
    assert not (tmp_path / "export" / "mre" / "1").exists()
    result = training.train(tiny_data, str(run_dir), **arguments)
    assert result.resumed_from_epoch == 1
    assert result.epochs_run == 1
    assert len(result.history["loss"]) == 2
    assert training.is_finished_run(run_dir)


def _can_mount_tmpfs(path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)],
                            capture_output=True)
    return result.returncode == 0


@pytest.fixture(params=["tmpfs", "file-size-limit"])
def full_disk(request, tmp_path):
    """`(directory, limit)`: a directory that takes 64 KiB, a tmpfs mount
    (needs root) or RLIMIT_FSIZE, and a context manager to write under.

    Python ignores SIGXFSZ, so under the file size limit a write past it
    fails with EFBIG ("File too large") instead of killing the process. The
    limit holds only inside `limit()`: it applies to every file of the
    process, pytest's own output included.
    """
    mount = tmp_path / "small"
    mount.mkdir()
    if request.param == "tmpfs":
        if not _can_mount_tmpfs(mount):
            pytest.skip("mounting a tmpfs needs root and the mount program")
        try:
            yield mount, contextlib.nullcontext
        finally:
            subprocess.run(["umount", str(mount)], check=False)
        return

    @contextlib.contextmanager
    def limit():
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    yield mount, limit


def test_full_disk_while_writing_shards(full_disk, cli):
    directory, limit = full_disk
    target = directory / "sdme"
    with limit():
        status, _, err = cli("synth", "--out", target, "--num-clips", "40", "--no-progress")
    assert_one_line_error(status, err, r"\.sdme\..*\.partial/train-00000\.partial; (No space left on device|File too large)")
    assert os.listdir(directory) == []


def test_full_disk_from_the_library(full_disk):
    import tensorflow as tf

    from .conftest import write_tiny

    directory, limit = full_disk
    dims = {"text": 512, "audio": 4}
    with pytest.raises((tf.errors.OpError, OSError), match=r"No space left on device|File too large"):
        with limit():
            write_tiny(str(directory / "big"), dims=dims, shard_size=100)
    assert os.listdir(directory) == []


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_dead_worker_in_tf_config_times_out(tiny_data, tmp_path):
    from .conftest import run_cli_subprocess

    tf_config = {"cluster": {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]},
                 "task": {"type": "worker", "index": 0}}
    out = tmp_path / "run"
    try:
        result = run_cli_subprocess(
            ["train", "--data", tiny_data, "--out", str(out), "--strategy", "multiworker",
             "--cluster-timeout", "3", "--epochs", "1", "--batch-size", "8", "--verbose", "0"],
            env={"TF_CONFIG": json.dumps(tf_config)}, timeout=60,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("keras-mre train with a dead worker still ran after 60 s")
    # The process ends itself after the message (TensorFlow's cluster threads
    # would keep it alive), so any non-zero status is accepted.
    assert_one_line_error(result.returncode, result.stderr,
                          r"multi-worker cluster not complete after 3 s: not every task of TF_CONFIG",
                          status=None)
    assert not training.is_finished_run(out)
