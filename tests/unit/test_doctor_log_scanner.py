"""`voicectl doctor` warns when the C log scanner is not built (the other checks, against
real servers: tests/test_operate.py)."""

from __future__ import annotations

import sys


def test_doctor_warns_when_the_log_scanner_is_not_built(monkeypatch):
    from voicectl.doctor import check_log_scanner

    monkeypatch.setitem(sys.modules, "voicectl.logs._turnscan", None)  # import fails as unbuilt
    check = check_log_scanner()
    assert check.status == "warn" and "14x slower" in check.detail
    assert "python3-dev" in check.fix
