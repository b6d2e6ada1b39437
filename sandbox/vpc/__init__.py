"""The vpc service."""

from sandbox.vpc import backend, responses  # noqa: F401
