"""The price table `InquiryPriceRunInstances` quotes from: list prices of the catalogue's instance types.

Where the figures come from: Tencent Cloud's public CVM pricing (the price overview, 213/2176, and the CVM price
calculator) for ap-guangzhou, first price step, in CNY, rounded to a per-core and per-GB-of-memory hourly rate per
family, which reproduces the calculator's hourly list price of the standard sizes to within a few percent (e.g.
S5.MEDIUM4, 2 cores 4 GB: 0.32 CNY/h). These are approximations written down by hand from the public pages, not
answers of a real account's InquiryPriceRunInstances; a real account's quote is the reference (the product only
ever asks the API). The rules the overview states, and the sandbox follows:
- pay-as-you-go (POSTPAID_BY_HOUR) is quoted per HOUR, with no discount (Discount 100), in three steps: the second
  step is 50 % and the third 34 % of the first;
- PREPAID is quoted for the whole period (`InstanceChargePrepaid.Period` months): the monthly price is
  MONTHLY_HOURS_EQUIVALENT hours of the hourly one, with the usual term discounts (1 year 83 %, 2 years 70 %,
  3 years and more 50 %);
- the system disk is part of the instance price (premium cloud disk 0.35, SSD 1.00 CNY per GB-month);
- public traffic (TRAFFIC_POSTPAID_BY_HOUR) is quoted per GB, 0.80 CNY; bandwidth (BANDWIDTH_POSTPAID_BY_HOUR)
  per Mbps-hour, 0.063 CNY.
Prices scale with InstanceCount.
"""

from typing import Any

from sandbox.core.catalog import INSTANCE_TYPES

# family -> (CNY per core-hour, CNY per GB-hour), first step, ap-guangzhou
FAMILY_RATES: dict[str, tuple[float, float]] = {
    "S5": (0.080, 0.040),
    "S6": (0.084, 0.042),
    "SA2": (0.055, 0.028),
    "SA3": (0.058, 0.029),
}
SECOND_STEP, THIRD_STEP = 0.50, 0.34
MONTHLY_HOURS_EQUIVALENT = 456  # a month prepaid costs this many hours of the hourly price (~63 % of 720)
TERM_DISCOUNTS = {12: 83.0, 24: 70.0, 36: 50.0, 48: 50.0, 60: 50.0}  # months -> Discount (%); shorter: 100
DISK_GB_MONTH = {"CLOUD_PREMIUM": 0.35, "CLOUD_SSD": 1.00, "CLOUD_BSSD": 0.50, "CLOUD_HSSD": 1.00}
TRAFFIC_GB = 0.80
BANDWIDTH_MBPS_HOUR = 0.063


def hourly(instance_type: str, disk_type: str = "CLOUD_PREMIUM", disk_gb: int = 50) -> float:
    """The first-step hourly list price of one server of this type with its system disk."""
    spec = INSTANCE_TYPES[instance_type]
    per_core, per_gb = FAMILY_RATES[spec.family]
    disk = DISK_GB_MONTH.get(disk_type, DISK_GB_MONTH["CLOUD_PREMIUM"]) * disk_gb / 720
    return spec.cpu * per_core + spec.memory * per_gb + disk


def _money(value: float) -> float:
    return round(value, 2)


def instance_price(
    instance_type: str, charge_type: str, period_months: int | None, count: int, disk_type: str, disk_gb: int
) -> dict[str, Any]:
    """`Price.InstancePrice` of InquiryPriceRunInstances."""
    unit = hourly(instance_type, disk_type, disk_gb) * count
    if charge_type == "PREPAID":
        months = period_months or 1
        original = unit * MONTHLY_HOURS_EQUIVALENT * months
        discount = TERM_DISCOUNTS.get(months, 100.0)
        return {
            "OriginalPrice": _money(original),
            "DiscountPrice": _money(original * discount / 100),
            "Discount": discount,
        }
    return {  # POSTPAID_BY_HOUR (and SPOTPAID, quoted at the list price here)
        "UnitPrice": _money(unit),
        "ChargeUnit": "HOUR",
        "UnitPriceDiscount": _money(unit),
        "Discount": 100.0,
        "UnitPriceSecondStep": _money(unit * SECOND_STEP),
        "UnitPriceDiscountSecondStep": _money(unit * SECOND_STEP),
        "UnitPriceThirdStep": _money(unit * THIRD_STEP),
        "UnitPriceDiscountThirdStep": _money(unit * THIRD_STEP),
    }


def bandwidth_price(internet_charge_type: str | None, bandwidth_out: int, count: int) -> dict[str, Any] | None:
    """`Price.BandwidthPrice`: None when the servers have no public bandwidth."""
    if bandwidth_out <= 0:
        return None
    if internet_charge_type == "BANDWIDTH_POSTPAID_BY_HOUR":
        unit = BANDWIDTH_MBPS_HOUR * bandwidth_out * count
        return {"UnitPrice": _money(unit), "ChargeUnit": "HOUR", "UnitPriceDiscount": _money(unit), "Discount": 100.0}
    return {"UnitPrice": TRAFFIC_GB, "ChargeUnit": "GB", "UnitPriceDiscount": TRAFFIC_GB, "Discount": 100.0}
