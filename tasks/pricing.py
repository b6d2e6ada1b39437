"""Price quotes: what one server of a type costs per hour, as the cloud quotes it (`InquiryPriceRunInstances`).

The quote asks for exactly what a launch would ask (zone, image, instance type, charge type, system disk), so it is
the price of the servers a tier adds. Pay-as-you-go (POSTPAID_BY_HOUR) answers a price per HOUR
(`UnitPriceDiscount`, the first price step); PREPAID answers the price of the whole term (`DiscountPrice` for
`prepaid_months`), spread here over its hours (730 a month) so both compare as a price per server-hour.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel

from tasks.cloud import call_json, clients_for

HOURS_PER_MONTH = 730
ChargeType = Literal["POSTPAID_BY_HOUR", "PREPAID"]


class ServerPrice(BaseModel):
    instance_type: str
    charge_type: ChargeType
    zone: str
    hourly: float  # one server, per hour, after discounts
    currency: str = "CNY"
    quoted: dict[str, Any]  # the answer's Price.InstancePrice, as the cloud gave it

    def describe(self) -> str:
        return (
            f"{self.hourly:.4f} {self.currency}/h per {self.instance_type} ({self.charge_type}, {self.zone}; "
            "InquiryPriceRunInstances)"
        )


@task(cache_policy=NO_CACHE)
def quote_server_hour(
    zone: str,
    image_id: str,
    instance_type: str,
    charge_type: ChargeType = "POSTPAID_BY_HOUR",
    prepaid_months: int = 1,
    project_id: int = 0,
    region: str | None = None,
) -> ServerPrice:
    """The cloud's price of one server of `instance_type` per hour, for `charge_type`."""
    request: dict[str, Any] = {
        "Placement": {"Zone": zone, "ProjectId": project_id},
        "ImageId": image_id,
        "InstanceType": instance_type,
        "InstanceChargeType": charge_type,
        "InstanceCount": 1,
    }
    if charge_type == "PREPAID":
        request["InstanceChargePrepaid"] = {"Period": prepaid_months}
    price = call_json(clients_for(region).cvm, "InquiryPriceRunInstances", request)["Price"]["InstancePrice"]
    if charge_type == "PREPAID":
        hourly = price["DiscountPrice"] / (prepaid_months * HOURS_PER_MONTH)
    else:
        hourly = price["UnitPriceDiscount"]
    return ServerPrice(instance_type=instance_type, charge_type=charge_type, zone=zone, hourly=hourly, quoted=price)
