"""The clients of the agent's dependencies, with timeouts and breakers: Letta and the LLM."""
