"""Which livekit-server release archive `voicectl install livekit` fetches for a platform
(the install itself, against a local release server: tests/test_livekit_install.py)."""

from __future__ import annotations

import pytest

from voicectl.errors import EXIT_USAGE, UsageError
from voicectl.livekit import install as lk

VERSION = lk.LIVEKIT_VERSION


def test_asset_names_follow_the_release_and_unsupported_platforms_exit_2():
    v = VERSION
    assert lk.asset_name("Linux", "x86_64") == f"livekit_{v}_linux_amd64.tar.gz"
    assert lk.asset_name("Linux", "aarch64") == f"livekit_{v}_linux_arm64.tar.gz"
    assert lk.asset_name("Linux", "arm64") == f"livekit_{v}_linux_arm64.tar.gz"
    assert lk.asset_name("Linux", "armv7l") == f"livekit_{v}_linux_armv7.tar.gz"
    assert lk.release_url() == f"https://github.com/livekit/livekit/releases/download/v{v}/"
    assert lk.release_url("http://127.0.0.1:1/x") == "http://127.0.0.1:1/x/"
    with pytest.raises(UsageError) as exc:
        lk.asset_name("Darwin", "arm64")
    assert exc.value.code == EXIT_USAGE
    assert str(exc.value) == ("no livekit-server release for Darwin arm64 (LiveKit publishes "
                              "Linux amd64, arm64 and armv7 builds); on macOS: brew install "
                              "livekit")
    with pytest.raises(UsageError, match=r"^no livekit-server release for Linux riscv64 \("):
        lk.asset_name("Linux", "riscv64")
