"""The taskstack Pulumi program; Pulumi runs `__main__.py` (Pulumi.yaml `main: infra/`)."""
