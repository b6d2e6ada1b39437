"""CVM errors shared by the image and instance rules, with the real API's codes."""

from sandbox.core.errors import ApiError

# An operation refused because of the instance's state: the real API names the state in the code.
_STATE_CODES = {
    "PENDING": "UnsupportedOperation.InstanceStatePending",
    "LAUNCH_FAILED": "UnsupportedOperation.InstanceStateLaunchFailed",
    "RUNNING": "UnsupportedOperation.InstanceStateRunning",
    "STOPPED": "UnsupportedOperation.InstanceStateStopped",
    "STOPPING": "UnsupportedOperation.InstanceStateStopping",
    "STARTING": "UnsupportedOperation.InstanceStateStarting",
    "REBOOTING": "UnsupportedOperation.InstanceStateRebooting",
    "TERMINATING": "UnsupportedOperation.InstanceStateTerminating",
    "SHUTDOWN": "UnsupportedOperation.InstanceStateShutdown",
}


def state_refused(instance_id: str, state: str) -> ApiError:
    code = _STATE_CODES.get(state, "InvalidInstanceState")
    return ApiError(code, f"The instance `{instance_id}` is {state}: the operation is not supported in this state.")


def dry_run_passed() -> ApiError:
    """What a DryRun request that passed every check answers (an error, as on the real API)."""
    return ApiError("DryRunOperation", "Request validation has been passed with DryRun flag set.")
