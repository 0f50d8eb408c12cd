"""pytest-benchmark suites: collected with `pytest bench/ --benchmark-only`."""
