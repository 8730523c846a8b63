"""Rehearse `pulumi up`: run the Pulumi program under mocks that apply each registration to Docker
as the provider would (docs/rehearsal.md).
"""
