"""The web console's vendored livekit-client is the release scripts/vendor_livekit_client.sh
records (the console itself: tests/test_web.py)."""

from __future__ import annotations

import hashlib

from tests.support.project import REPO
from voicectl.web import STATIC_DIR


def test_vendored_livekit_client_is_the_recorded_release() -> None:
    vendor = STATIC_DIR / "vendor"
    info = dict(line.split(": ", 1) for line in
                (vendor / "livekit-client.VERSION").read_text().splitlines())
    digest = hashlib.sha256((vendor / "livekit-client.umd.js").read_bytes()).hexdigest()
    assert digest == info["sha256"]
    script = (REPO / "scripts" / "vendor_livekit_client.sh").read_text()
    assert f"VERSION={info['version']}" in script
    assert info["license"].startswith("Apache-2.0") and (vendor / "livekit-client.LICENSE").exists()
