"""The CLI starts fast: what `--help`, `status`, `up` and `down` import is nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("livekit.agents", "livekit.api", "letta_client", "openai", "pydantic", "numpy",
         "prometheus_client", "aiohttp")

PROBE = """
import json, sys
import voicectl.cli, voicectl.status, voicectl.stack, voicectl.render, voicectl.keeper
from agent.config import load_settings
from voicectl.services import build_services
build_services(load_settings())
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy_roots})
                 ))
"""


def test_control_plane_modules_import_nothing_heavy(tmp_path):
    roots = sorted({h.split(".")[0] for h in HEAVY})
    code = PROBE.replace("{heavy_roots}", repr(set(roots)))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True, env={"PATH": "/usr/bin:/bin",
                                                     "VOICECTL_HOME": str(tmp_path / "h")})
    loaded = json.loads(out.stdout)
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == []
