"""The clb service."""

from sandbox.clb import backend, responses  # noqa: F401
