"""Voice from the terminal: one turn on a recording (say) and a caller in a room (talk)."""
