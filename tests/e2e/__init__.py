"""End-to-end tests: real OS processes, sockets and brokers (marked e2e by tests/conftest.py)."""
