"""Test infrastructure shared by the integration, e2e and benchmark suites."""
