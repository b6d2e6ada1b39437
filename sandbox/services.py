"""Every emulated service: importing this registers their backends and actions."""

from sandbox import autoscaling, clb, cvm, monitor, vpc  # noqa: F401
