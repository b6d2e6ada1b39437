"""Every emulated service: importing this registers their backends and actions."""

from sandbox import clb, cvm, vpc  # noqa: F401
