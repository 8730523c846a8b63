"""Name lookups and the prefork pool.

glibc's resolver keeps a process-wide lock (`__resolv_context_get`). A pool child forked while
another thread of the worker's main process (the liveness reporter connecting to Redis, say) holds
it inherits it held, with no thread left to release it: the child's first lookup (its job's
database connection) waits forever, its job never starts, and liveness sees the task running.
`guard_name_lookups` makes every lookup in the main process hold one lock, which a fork takes
first (`os.register_at_fork`): a child is forked only between lookups.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

_LOOKUPS = threading.Lock()
# The socket module's functions that reach glibc's resolver.
LOOKUP_FUNCTIONS = (
    "getaddrinfo",
    "gethostbyname",
    "gethostbyname_ex",
    "gethostbyaddr",
    "getnameinfo",
)
_installed = False


def _guarded(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def lookup(*args: Any, **kwargs: Any) -> Any:
        with _LOOKUPS:
            return function(*args, **kwargs)

    return lookup


def guard_name_lookups() -> None:
    """Install the guard in this process, once (the worker's main process, before its pool)."""
    global _installed
    if _installed:
        return
    for name in LOOKUP_FUNCTIONS:
        setattr(socket, name, _guarded(getattr(socket, name)))
    # The forking thread holds the lock across fork(); parent and child each release their copy.
    os.register_at_fork(
        before=_LOOKUPS.acquire,
        after_in_parent=_LOOKUPS.release,
        after_in_child=_LOOKUPS.release,
    )
    _installed = True
