"""`voicectl hybrid` for people: the lines hybrid.switch_hybrid reported, one a line."""

from __future__ import annotations

import sys


def hybrid_report(report: dict) -> None:
    """What was written to .env, whether the agent restarted, the configured and running mode."""
    for line in report["lines"]:
        sys.stdout.write(line + "\n")
