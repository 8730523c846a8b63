"""The rules that tie the backup keys to each other and to the rest (docs/backup.md), part of
`StackConfig`'s cross-key rules: each a ValueError whose text starts with the key to change."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infra.config.model import StackConfig


def backup_rules(config: StackConfig) -> None:
    if config.backup_repository == "host-path" and not config.backup_repository_path:
        raise ValueError(
            "backupRepositoryPath: backupRepository host-path needs the host directory"
        )
    if config.target == "swarm" and config.is_prod and config.backup:
        if config.backup_repository == "volume":
            # Its volume would be on the database's node, lost with it.
            raise ValueError(
                "backupRepository: a prod swarm stack keeps its repository off the database's "
                "node: set backupRepository repository-host and label another node with "
                "backupRepositoryNodeLabels (or host-path on a network mount)"
            )
        if config.backup_repository == "repository-host" and set(
            config.backup_repository_node_labels
        ) <= set(config.postgres_node_labels):
            raise ValueError(
                "backupRepositoryNodeLabels: the repository host must be pinned to another "
                "node than PostgreSQL: give it a label of its own, taskstack.backup=true"
            )
    if config.restore_target and not config.backup:
        raise ValueError("restoreTarget: a restore reads the backup repository; set backup")
    if config.is_prod and config.backup and config.wal_archive_timeout_seconds > 60:
        # The promise of docs/backup.md: a commit reaches the repository within a minute.
        raise ValueError(
            "walArchiveTimeoutSeconds: a prod stack archives WAL within 60 s of a commit"
        )
