"""The cvm service."""

from sandbox.cvm import backend, responses  # noqa: F401
