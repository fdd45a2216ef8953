"""`voicectl logs`: service logs, and the agent's event log read as turns (TTFT) and breaker
transitions."""
