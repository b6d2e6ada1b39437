"""The as service (Auto Scaling 2018-04-19; tccli's folder `autoscaling`)."""

from sandbox.autoscaling import backend, group_actions, instance_actions, schedule_actions  # noqa: F401
