"""The brain of a turn: hybrid streaming with Letta's memory in the prompt, and the runtime
that owns its clients, breakers and background sync."""
