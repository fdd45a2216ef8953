"""Create Letta 0.16.8's database schema from its ORM (run with Letta's own interpreter).

    <letta-venv>/bin/python voicectl/letta/schema.py --uri postgresql://letta@localhost/letta?...

Run by file path: Letta's venv cannot import voicectl, and this file imports nothing of ours.
The Letta wheel carries no migrations, so the tables come from `Base.metadata.create_all`,
followed by the two fixes the ORM does not express: a sequence default for
`messages.sequence_id`, and a real `now()` default for `archives_agents.created_at` (the ORM
renders it as the string literal 'now()'). Idempotent: existing tables are left alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time


def _async_uri(uri: str) -> str:
    """The URI with the asyncpg driver (the only PostgreSQL driver Letta's venv carries)."""
    scheme, sep, rest = uri.partition("://")
    if not sep or not scheme.startswith("postgres"):
        raise SystemExit(f"not a PostgreSQL URI: {uri}")
    return f"postgresql+asyncpg://{rest}"


FIXES = [
    # messages.sequence_id: NOT NULL, unique, server_default=FetchedValue() -> a real sequence.
    "CREATE SEQUENCE IF NOT EXISTS message_sequence_id_seq OWNED BY messages.sequence_id",
    "ALTER TABLE messages ALTER COLUMN sequence_id "
    "SET DEFAULT nextval('message_sequence_id_seq'::regclass)",
    # Keep the sequence ahead of existing rows (a no-op on an empty table).
    "SELECT setval('message_sequence_id_seq', "
    "GREATEST((SELECT COALESCE(MAX(sequence_id), 0) FROM messages), "
    "(SELECT last_value FROM message_sequence_id_seq)), true)",
    # archives_agents.created_at: default was rendered as the literal 'now()'.
    "ALTER TABLE archives_agents ALTER COLUMN created_at SET DEFAULT now()",
]


async def _create(uri: str) -> tuple[int, int]:
    from letta.orm import Base
    from sqlalchemy import inspect, text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(_async_uri(uri))
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            before = len(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            await conn.run_sync(Base.metadata.create_all)
            for stmt in FIXES:
                await conn.execute(text(stmt))
            after = len(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()
    return before, after


def create_schema(uri: str) -> tuple[int, int]:
    """Create missing tables and apply the fixes; return (tables before, tables after)."""
    os.environ["LETTA_PG_URI"] = uri  # before importing letta: column types depend on it
    return asyncio.run(_create(uri))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="create Letta's schema")
    parser.add_argument("--uri", default=os.environ.get("LETTA_PG_URI"))
    args = parser.parse_args(argv)
    if not args.uri:
        parser.error("--uri or LETTA_PG_URI is required")
    started = time.monotonic()
    before, after = create_schema(args.uri)
    print(f"letta schema ready: {after} tables ({after - before} created) "
          f"in {time.monotonic() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
