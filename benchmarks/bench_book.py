"""Cold, stored and warm builds of the book, side by side: every chapter executed with an empty results
store (cold); every chapter executed again with that store full (stored: what a build costs after an
edit to `lhlib`, which invalidates every chapter but not the trained networks and measurements the
store holds); and the same build once more with nothing changed (warm: every chapter reused from the
execution cache).

    .venv/bin/python benchmarks/bench_book.py --profile smoke
    .venv/bin/python benchmarks/bench_book.py --profile cpu     # the profile `make book` builds

The build runs on a copy of the book's pages in a temporary folder with an empty results store, so
neither this checkout's executed copies nor its results store are touched; the data folder is
shared (linked in, so nothing is fetched again; a chapter may decode a dataset into it once, as
`make data` would). Prints each chapter's cold and stored times, the three totals with the HTML build,
and their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lhlib.build import book  # noqa: E402
from lhlib.engine.store import cache_root  # noqa: E402

PAGES = ("_config.yml", "_toc.yml", "book", "notebooks", "requirements.txt")


def timed_build(root: Path, profile: str, force: bool) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    book.build_book([], profile, root, force=force)
    seconds = time.perf_counter() - start
    return seconds, json.loads((root / "_build" / "executed" / profile / "report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke", choices=book.PROFILES)
    args = parser.parse_args()
    data = cache_root() / "data"
    with tempfile.TemporaryDirectory(prefix="bench-book-") as folder:
        root, store = Path(folder) / "book", Path(folder) / "store"
        root.mkdir()
        store.mkdir()
        for item in PAGES:
            source = ROOT / item
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, root / item)
        if data.is_dir():
            (store / "data").symlink_to(data, target_is_directory=True)
        os.environ["LHLIB_CACHE"] = str(store)  # the chapters' kernels inherit it
        cold, cold_report = timed_build(root, args.profile, force=True)
        stored, stored_report = timed_build(root, args.profile, force=True)
        warm, warm_report = timed_build(root, args.profile, force=False)
    load = os.getloadavg()
    print(f"\nprofile {args.profile}, {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    import torch

    print(f"torch threads in each chapter's kernel: {torch.get_num_threads()} unless the chapter's code sets its own\n")
    print(f"{'chapter':<28} {'cold (s)':>9} {'stored (s)':>11}  warm")
    for cold_row, stored_row, warm_row in zip(cold_report, stored_report, warm_report):
        status = f"{warm_row['seconds']:.1f} s, ran: {warm_row['reason']}" if warm_row["ran"] else "reused"
        print(f"{cold_row['chapter']:<28} {cold_row['seconds']:9.1f} {stored_row['seconds']:11.1f}  {status}")
    for name, total, report in (("cold", cold, cold_report), ("stored", stored, stored_report)):
        executed = sum(row["seconds"] for row in report)
        print(f"\n{name} build: {total:7.1f} s  (chapters {executed:.1f} s, HTML and staging {total - executed:.1f} s)")
    print(f"\nwarm build: {warm:7.1f} s  (every chapter reused: {all(not r['ran'] for r in warm_report)})")
    print(
        f"cold / stored: {cold / stored:.1f}x   cold / warm: {cold / warm:.1f}x   stored / warm: {stored / warm:.1f}x"
    )


if __name__ == "__main__":
    main()
