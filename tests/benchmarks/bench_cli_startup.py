"""Wall time of `voicectl --help` and `voicectl status` against `python -c pass`.

Target (issue 2): median at most 0.3 s. Run: python -m tests.benchmarks.bench_cli_startup
"""

from __future__ import annotations

import os
import sys
import tempfile

from tests.benchmarks.common import median, percentile, time_command

RUNS = 20
TARGET_S = 0.3


def main() -> int:
    with tempfile.TemporaryDirectory() as project:
        env = {**os.environ, "VOICECTL_HOME": os.path.join(project, ".voicectl")}
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "voicectl --help": [sys.executable, "-m", "voicectl.cli", "--help"],
            "voicectl status": [sys.executable, "-m", "voicectl.cli", "status"],
        }
        results = {name: time_command(argv, RUNS, cwd=project, env=env)
                   for name, argv in cases.items()}
    base = median(results["python -c pass"])
    print(f"{'command':<18} {'median':>8} {'p95':>8} {'x python':>9}  (runs={RUNS})")
    ok = True
    for name, times in results.items():
        med = median(times)
        print(f"{name:<18} {med:8.3f} {percentile(times, 95):8.3f} {med / base:9.1f}")
        if name != "python -c pass" and med > TARGET_S:
            ok = False
    print(f"target: median <= {TARGET_S}s -> {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
