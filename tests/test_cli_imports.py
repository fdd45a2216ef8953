"""The CLI starts fast: what `--help`, `status`, `up` and `down` import is nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("livekit.agents", "livekit.api", "letta_client", "openai", "pydantic", "numpy",
         "prometheus_client", "aiohttp")

PROBE = """
import json, sys
import voicectl.cli, voicectl.supervise.status, voicectl.supervise.stack, voicectl.render.status
import voicectl.supervise.keeper
from agent.config.loading import load_settings
from voicectl.services.catalog import build_services
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


def test_logs_ttft_json_imports_no_table_renderer(tmp_path):
    # `voicectl logs --ttft --json` keeps pace with grep: it prints JSON, so rich stays unloaded
    home = tmp_path / "h"
    home.mkdir()
    (home / "events.jsonl").write_text(
        '{"ts":1763700000.5,"event":"turn","mode":"hybrid","path":"hybrid","ttft_ms":12.5,'
        '"total_ms":80.0,"fallback":false}\n')
    code = ("import sys\nfrom voicectl.cli import main\nsys.argv = ['voicectl', 'logs', '--ttft',"
            " '--json']\ntry:\n    main()\nfinally:\n    print(sorted(m for m in sys.modules "
            "if m.split('.')[0] == 'rich'), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin", "VOICECTL_HOME": str(home),
                                         "VOICECTL_ENV_FILE": str(tmp_path / ".env")})
    assert json.loads(out.stdout)["stats"]["hybrid"]["p50"] == 12.5, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "[]"
