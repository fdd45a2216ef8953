"""Supervision: keepers, pid records, process trees, ports, the stack brought up and down, and
each service's status."""
