"""Speed of the 33-d librosa audio extractor, in multiples of real time per core.

Speech is synthesised with espeak-ng (Debian package `espeak-ng`) from a few
sentences and stored at several sample rates (16 kHz and 44.1 kHz need
resampling to the extractor's 22050 Hz, 22050 Hz does not). Each file is
extracted `--repeats` times in this process with one BLAS/OpenMP thread; the
median wall time of a full call (decode, resample, zero-crossing rate, MFCC,
chroma CQT) gives `audio seconds / wall seconds`. Results go to
`benchmarks/results/audio_extraction.md`.

    python benchmarks/audio_extraction.py
    python benchmarks/audio_extraction.py --seconds 60 --repeats 7
"""

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_name] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import soundfile  # noqa: E402

from keras_mre_pipelines.audio import AudioFeatureExtractor  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SENTENCES = [
    "I can hardly believe it, this is the best day of my whole life.",
    "Please leave me alone, I do not want to talk about it any more.",
    "The meeting has been moved to Thursday afternoon at three o'clock.",
    "Why would you say something like that in front of everyone?",
]


def _speech(seconds, folder):
    """Returns about `seconds` of espeak-ng speech at its native 22050 Hz."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        sys.exit("espeak-ng is needed: apt-get install espeak-ng")
    pieces = []
    for k, sentence in enumerate(SENTENCES):
        path = folder / f"s{k}.wav"
        subprocess.run([espeak, "-w", str(path), sentence], check=True)
        signal, rate = soundfile.read(path, dtype="float32")
        pieces.append(signal)
    sentence_block = np.concatenate(pieces)
    repeats = int(np.ceil(seconds * rate / len(sentence_block)))
    return np.tile(sentence_block, repeats)[: int(seconds * rate)], rate


def _cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each test file")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per file")
    parser.add_argument("--rates", type=int, nargs="+", default=[16000, 22050, 44100])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "audio_extraction.md"))
    args = parser.parse_args(argv)

    extractor = AudioFeatureExtractor()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        speech, native = _speech(args.seconds, folder)
        for rate in args.rates:
            signal = speech if rate == native else librosa.resample(
                speech, orig_sr=native, target_sr=rate
            )
            path = folder / f"speech_{rate}.wav"
            soundfile.write(path, signal, rate, subtype="PCM_16")
            duration = len(signal) / rate
            extractor(path)  # warm-up: imports, FFT plans, filter banks
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                frames = extractor(path)
                times.append(time.perf_counter() - start)
            median = float(np.median(times))
            rows.append((rate, duration, frames.shape[0], median, min(times), duration / median))
            print(f"{rate} Hz: {duration:.1f} s audio, median {median:.3f} s -> "
                  f"{duration / median:.1f}x real time", flush=True)

    command = "python benchmarks/audio_extraction.py " + " ".join(argv or sys.argv[1:])
    lines = [
        "# Audio feature extraction speed",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {_cpu_name()}, {os.cpu_count()} logical CPUs (shared with other "
        f"jobs; load average {os.getloadavg()[0]:.1f} at the end); one BLAS/OpenMP thread",
        f"- Versions: Python {platform.python_version()}, librosa {librosa.__version__}, "
        f"numpy {np.__version__}, soundfile {soundfile.__version__}",
        f"- Command: `{command.strip()}`",
        f"- Extractor: `AudioFeatureExtractor()` defaults {extractor.get_config()}",
        f"- Input: espeak-ng speech, {args.seconds:g} s per file, 16-bit WAV; median of "
        f"{args.repeats} calls after one warm-up call",
        "",
        "| file rate (Hz) | audio (s) | frames | median (s) | best (s) | × real time (1 core) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for rate, duration, frames, median, best, speed in rows:
        lines.append(f"| {rate} | {duration:.1f} | {frames} | {median:.3f} | {best:.3f} | {speed:.1f} |")
    slowest = min(r[-1] for r in rows)
    lines += [
        "",
        f"Slowest case: {slowest:.1f}× real time per core "
        f"(target ≥ 20×: {'met' if slowest >= 20 else 'NOT met'}). With `--workers N` "
        "the manifest extractor runs N such processes.",
        "",
    ]
    pathlib.Path(args.out).write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
