"""Run every benchmark in turn: python -m tests.benchmarks"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    failed = 0
    for mod in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if not mod.name.startswith("bench_"):
            continue
        print(f"\n== {mod.name} ==", flush=True)
        module = importlib.import_module(f"tests.benchmarks.{mod.name}")
        failed += bool(module.main())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
