"""Tests of the application against the real PostgreSQL and Redis on this machine."""
