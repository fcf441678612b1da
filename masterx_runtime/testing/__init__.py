"""Helpers to start real Redis and MongoDB-wire servers for tests, benchmarks and local runs."""
