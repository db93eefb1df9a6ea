"""Matrix-product throughput of TensorFlow and PyTorch on the LSTM's shapes.

    python benchmarks/gemm_throughput.py
    python benchmarks/gemm_throughput.py --threads 1 2 --rows 1952

The text LSTM's input projection (valid steps x 768 features, times
768 x 4*128 gate weights) and its weight gradient are the largest products
of an MRE or LMF training step on MOSEI shapes. This script times exactly
those two products, plus one recurrent product (64 x 128 times 128 x 512),
in TensorFlow (this environment: plain graph and XLA) and in PyTorch (the
MMSA virtual environment of `vs_mmsa.py`, run as a subprocess), with the
same thread counts, in alternating rounds, and writes GFLOP/s per product
to `--output`. It explains how much of the speed gap to the PyTorch
reference implementations lies in the linear-algebra library rather than in
the models.
"""

import argparse
import datetime
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


CHAIN = 50  # recurrent products per timed call, each fed the last one's output


def shapes(rows):
    """name -> (a shape, b shape, transpose_a): the products timed. The
    recurrent product runs as a chain of CHAIN dependent products per call
    (`h = (h U)[:, :128]`, like the LSTM's steps), so that call overhead
    does not dominate a product this small."""
    return {
        "projection x W": ((rows, 768), (768, 512), False),
        "weight gradient x^T dZ": ((rows, 768), (rows, 512), True),
        f"recurrent h U, chain of {CHAIN}": ((64, 128), (128, 512), False),
    }


def _is_chain(name):
    return name.startswith("recurrent")


def _flops(name, a_shape, b_shape, transpose_a):
    m, k = (a_shape[1], a_shape[0]) if transpose_a else a_shape
    return 2.0 * m * k * b_shape[1] * (CHAIN if _is_chain(name) else 1)


def _median_ms(function, rounds, repeats):
    function()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            function()
        times.append((time.perf_counter() - start) / repeats * 1000)
    return statistics.median(times)


def time_tensorflow(rows, threads, rounds, repeats):
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    rng = np.random.default_rng(0)
    out = {}
    for name, (a_shape, b_shape, transpose_a) in shapes(rows).items():
        a = tf.constant(rng.normal(size=a_shape).astype("float32"))
        b = tf.constant(rng.normal(size=b_shape).astype("float32"))
        if _is_chain(name):
            def compute(a=a, b=b):
                h = a
                for _ in range(CHAIN):
                    h = tf.matmul(h, b)[:, : a.shape[1]]
                return h
        else:
            def compute(a=a, b=b, t=transpose_a):
                return tf.matmul(a, b, transpose_a=t)
        for label, jit in (("tensorflow", False), ("tensorflow XLA", True)):
            product = tf.function(compute, jit_compile=jit)
            ms = _median_ms(lambda: product().numpy(), rounds, repeats)
            out[(label, name)] = _flops(name, a_shape, b_shape, transpose_a) / ms / 1e6
    return out


def time_torch(rows, threads, rounds, repeats):
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    out = {}
    for name, (a_shape, b_shape, transpose_a) in shapes(rows).items():
        a = torch.randn(*a_shape)
        b = torch.randn(*b_shape)
        if _is_chain(name):
            def product(a=a, b=b):
                h = a
                for _ in range(CHAIN):
                    h = (h @ b)[:, : a.shape[1]]
                return h
        else:
            product = (lambda: a.t() @ b) if transpose_a else (lambda: a @ b)
        ms = _median_ms(product, rounds, repeats)
        out[name] = _flops(name, a_shape, b_shape, transpose_a) / ms / 1e6
    return out


def _worker_command(python, kind, threads, args):
    return [
        str(python), str(pathlib.Path(__file__).resolve()), "--worker", kind,
        "--worker-threads", str(threads), "--rows", str(args.rows),
        "--rounds", str(args.worker_rounds), "--repeats", str(args.repeats),
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rows", type=int, default=1952,
                        help="valid text steps in a batch (61%% of 64 x 50)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating worker runs per framework and thread count")
    parser.add_argument("--worker-rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--venv", default=str(pathlib.Path.home() / ".cache" / "keras-mre-bench" / "mmsa-venv"),
                        help="virtual environment with torch (see vs_mmsa.py)")
    parser.add_argument("--worker", choices=["tensorflow", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "gemm_throughput.md"))
    args = parser.parse_args(argv)
    if args.worker:
        timer = time_tensorflow if args.worker == "tensorflow" else time_torch
        result = timer(args.rows, args.worker_threads, args.worker_rounds, args.repeats)
        print(json.dumps({"|".join(k) if isinstance(k, tuple) else f"torch|{k}": v
                          for k, v in result.items()}))
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tqdm import tqdm

    import model_speed

    torch_python = pathlib.Path(args.venv) / "bin" / "python"
    if not torch_python.exists():
        raise SystemExit(
            f"gemm_throughput: no torch environment at {args.venv}; "
            "run benchmarks/vs_mmsa.py once to create it"
        )
    torch_version = subprocess.run(
        [str(torch_python), "-c", "import torch; print(torch.__version__)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    load_before = os.getloadavg()
    samples = {}
    jobs = [(threads, kind, python) for _ in range(args.rounds) for threads in args.threads
            for kind, python in (("tensorflow", sys.executable), ("torch", torch_python))]
    for threads, kind, python in tqdm(jobs, desc="worker runs"):
        done = subprocess.run(_worker_command(python, kind, threads, args),
                              capture_output=True, text=True, check=True)
        for key, value in json.loads(done.stdout.strip().splitlines()[-1]).items():
            samples.setdefault((threads,) + tuple(key.split("|")), []).append(value)
    lines = [
        "# Matrix-product throughput, TensorFlow vs PyTorch, on the LSTM's shapes",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {model_speed.machine().split(';')[0]}",
        f"- Versions: {model_speed.versions()}; torch {torch_version}",
        f"- Command: `{' '.join(['python'] + sys.argv)}`",
        f"- Load average (1/5/15 min) at start: {' / '.join(f'{v:.2f}' for v in load_before)}",
        f"- Timing: {args.rounds} alternating worker runs per framework and thread "
        f"count, each the median of {args.worker_rounds} rounds of {args.repeats} "
        "products; the table gives the median over worker runs.",
        "",
        "| threads | product | shape | tensorflow GFLOP/s | tensorflow XLA GFLOP/s | torch GFLOP/s | torch / tensorflow |",
        "|---|---|---|---|---|---|---|",
    ]
    for threads in args.threads:
        for name, (a_shape, b_shape, transpose_a) in shapes(args.rows).items():
            tf_rate = statistics.median(samples[(threads, "tensorflow", name)])
            xla_rate = statistics.median(samples[(threads, "tensorflow XLA", name)])
            torch_rate = statistics.median(samples[(threads, "torch", name)])
            shape = f"{'T' if transpose_a else ''}{a_shape} x {b_shape}"
            lines.append(
                f"| {threads} | {name} | {shape} | {tf_rate:.0f} | {xla_rate:.0f} | "
                f"{torch_rate:.0f} | {torch_rate / tf_rate:.2f} |"
            )
    lines.insert(7, f"- Load average (1/5/15 min) at end: {' / '.join(f'{v:.2f}' for v in os.getloadavg())}")
    text = "\n".join(lines) + "\n"
    pathlib.Path(args.output).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
