"""tasks.pricing against the sandbox: one server's price per hour, from the cloud's own quote."""

from typing import Any

import pytest

from sandbox.cvm import prices
from tasks.pricing import quote_server_hour


def test_a_server_hour_is_quoted_for_its_type_and_charge_type(cloud_env: Any) -> None:
    postpaid = quote_server_hour.fn("ap-guangzhou-3", "img-l8og963d", "S5.MEDIUM4")
    assert postpaid.hourly == round(prices.hourly("S5.MEDIUM4"), 2) and postpaid.quoted["ChargeUnit"] == "HOUR"
    yearly = quote_server_hour.fn("ap-guangzhou-3", "img-l8og963d", "S5.MEDIUM4", "PREPAID", prepaid_months=12)
    assert yearly.hourly == pytest.approx(yearly.quoted["DiscountPrice"] / (12 * 730))
    assert yearly.hourly < postpaid.hourly  # a year's term costs less per hour than pay-as-you-go
    assert "S5.MEDIUM4" in postpaid.describe() and "InquiryPriceRunInstances" in postpaid.describe()
