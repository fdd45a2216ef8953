"""The effective configuration as rows: what `voicectl config` shows and `--json` prints."""

from __future__ import annotations

from agent.config import Settings, config_fields, mask


def config_rows(s: Settings) -> list[dict]:
    """Each setting: name, value (secrets masked), source, whether secret, help and note."""
    rows = []
    for f in config_fields():
        value = getattr(s, f.name)
        shown = value
        if f.metadata["secret"]:
            shown = mask(str(value))
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        rows.append(
            {
                "name": f.metadata["env"],
                "value": shown,
                "source": s.sources.get(f.name, "default"),
                "secret": f.metadata["secret"],
                "help": f.metadata["help"],
                "note": f.metadata.get("note", ""),
            }
        )
    return rows
