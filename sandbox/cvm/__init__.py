"""The cvm service."""

from sandbox.cvm import admin, backend, instance_actions, responses  # noqa: F401
