"""What each service is (its ServiceSpec): command, ports, probe and dependencies."""
