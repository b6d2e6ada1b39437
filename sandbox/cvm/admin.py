"""CVM's admin route (`/_sandbox/cvm/restrict-state`, not part of Tencent's API): isolate or expire a server."""

from typing import TYPE_CHECKING, Any

from sandbox.wire.admin import AdminError, admin_route

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud


@admin_route("POST", "cvm/restrict-state")
def restrict_state(cloud: "Cloud", body: dict[str, Any]) -> dict[str, Any]:
    """Body: `instance_id`, `restrict_state` (NORMAL / EXPIRED / PROTECTIVELY_ISOLATED), optional `expired_time`."""
    try:
        instance = cloud.backends["cvm"].set_restrict_state(  # type: ignore[attr-defined]
            body["instance_id"], body.get("restrict_state", "NORMAL"), body.get("expired_time")
        )
    except KeyError as missing:
        raise AdminError(404, f"no instance {missing}") from None
    return {"instance_id": instance.instance_id, "restrict_state": instance.restrict_state}
