"""CVM 2017-03-12 `InquiryPriceRunInstances`: what RunInstances with the same request would cost (nothing is made).

The request is RunInstances' (Placement and ImageId required, as there); it is checked by the same rules as a
launch (zone, project, charge type and period, instance type, count, bandwidth, image) and priced from
`sandbox.cvm.prices`, whose docstring says where the figures come from.
"""

from typing import Any

from sandbox.core.errors import ApiError
from sandbox.core.registry import Request, action
from sandbox.cvm import prices
from sandbox.cvm.instance_actions import launch_spec
from sandbox.cvm.responses import VERSION, cvm


@action("cvm", VERSION, "InquiryPriceRunInstances")
def inquiry_price_run_instances(req: Request) -> dict[str, Any]:
    for name in ("Placement", "ImageId"):
        if not req.get(name):
            raise ApiError("MissingParameter", f"The request is missing a required parameter `{name}`.")
    spec = launch_spec(req.params)
    count = req.get("InstanceCount", 1)
    cvm(req).check_offer(req.region, spec, count)
    price: dict[str, Any] = {
        "InstancePrice": prices.instance_price(
            spec.instance_type,
            spec.charge_type,
            spec.prepaid_period,
            count,
            spec.system_disk_type,
            spec.system_disk_size,
        )
    }
    bandwidth = prices.bandwidth_price(spec.internet_charge_type, spec.bandwidth_out, count)
    if bandwidth is not None:
        price["BandwidthPrice"] = bandwidth
    return {"Price": price}
