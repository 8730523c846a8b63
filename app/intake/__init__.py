"""Intake: how an accepted job reaches the broker. POST /process's group commit
(`group_commit.py`), the Idempotency-Key (`idempotency.py`), the transactional outbox
(`outbox.py`) and the publisher that pushes its messages onto Redis (`broker.py`)."""
