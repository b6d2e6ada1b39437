"""The cvm service."""

from sandbox.cvm import admin, backend, instance_actions, price_actions, responses  # noqa: F401
