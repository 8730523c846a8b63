"""Rehearse `pulumi up`: run the Pulumi program under mocks that apply each registration to Docker.

`python -m tests.rehearsal up|down --stack dev|prod` (see docs/rehearsal.md).
"""
