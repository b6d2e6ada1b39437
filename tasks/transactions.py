"""Rollback bookkeeping: a task remembers what it made in its Prefect transaction; its hook undoes it.

Hooks run (in reverse order) only when the flow's `with transaction():` block fails, after retries
are exhausted. A process killed mid-run runs no hook: `cleanup-run` finds its resources by tags.
"""

from typing import Any

from prefect.transactions import Transaction, get_transaction


def remember(**values: Any) -> None:
    """Store values in the current task's transaction (no-op outside one, e.g. `task.fn(...)` in tests)."""
    txn = get_transaction()
    if txn is not None:
        for key, value in values.items():
            txn.set(key, value)


def recalled(txn: Transaction, *keys: str) -> list[Any]:
    return [txn.get(key, None) for key in keys]
