"""Run every `benchmarks/bench_*.py` module's `main()` in turn (found by glob, so new ones join).

    python -m benchmarks.run_all [--quick] [--out DIR]

The arguments go to each benchmark whose `main` takes an `argv`; one that fails is
reported and the others still run (the exit status is then 1).
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def modules() -> list[str]:
    """`benchmarks.bench_*` module names, sorted."""
    return [f"{__package__ or 'benchmarks'}.{p.stem}" for p in sorted(HERE.glob("bench_*.py"))]


def run(name: str, argv: list[str]):
    main = importlib.import_module(name).main
    takes_argv = bool(inspect.signature(main).parameters)
    if not takes_argv and argv:
        print(f"({name}.main takes no arguments: {' '.join(argv)} ignored)", flush=True)
    return main(argv) if takes_argv else main()


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    failed = []
    for name in modules():
        print(f"\n## {name}\n", flush=True)
        start = time.perf_counter()
        try:
            run(name, argv)
        except Exception:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            failed.append(name)
        print(f"({name}: {time.perf_counter() - start:.1f} s)", flush=True)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
