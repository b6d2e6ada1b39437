"""The as service (Auto Scaling 2018-04-19; tccli's folder `autoscaling`)."""

from sandbox.autoscaling import (  # noqa: F401
    admin,
    backend,
    group_actions,
    instance_actions,
    policy_actions,
    schedule_actions,
)
