"""The clb service."""

from sandbox.clb import backend, listener_actions, responses  # noqa: F401
