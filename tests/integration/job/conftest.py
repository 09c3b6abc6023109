"""Fixtures for the sync engine's integration tests (defined in lane.py)."""

from tests.integration.job.lane import lane, s3_lane

__all__ = ["lane", "s3_lane"]
