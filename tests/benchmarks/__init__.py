"""On-demand benchmarks (not part of the test suite): `make bench` or one module with -m."""
