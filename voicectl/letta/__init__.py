"""The managed Letta server: install, its Postgres, schema, running it, and its agents."""
