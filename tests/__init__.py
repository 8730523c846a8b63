"""Test suites: tests/app (the application), tests/infra, tests/rehearsal."""
