"""Letta memory on the agent's side: the core-memory cache, the outbox and its sync to Letta,
and the spec of the Letta agent."""
