"""CVM InquiryPriceRunInstances through the real SDK: RunInstances' request, a price from the list-price table."""

import json
from typing import Any

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.cvm.v20170312 import cvm_client, models

from sandbox.cvm import prices

ZONE, IMAGE = "ap-guangzhou-3", "img-l8og963d"


@pytest.fixture
def inquire(client: Any) -> Any:
    sdk = client(cvm_client.CvmClient)

    def call(**params: Any) -> dict[str, Any]:
        request = models.InquiryPriceRunInstancesRequest()
        request.from_json_string(json.dumps({"Placement": {"Zone": ZONE}, "ImageId": IMAGE, **params}))
        return json.loads(sdk.InquiryPriceRunInstances(request).to_json_string())["Price"]

    return call


def test_pay_as_you_go_is_quoted_per_hour_in_three_steps(inquire: Any) -> None:
    one = inquire(InstanceType="S5.MEDIUM4", InstanceChargeType="POSTPAID_BY_HOUR")["InstancePrice"]
    assert one["ChargeUnit"] == "HOUR" and one["Discount"] == 100
    assert one["UnitPrice"] == one["UnitPriceDiscount"] == round(prices.hourly("S5.MEDIUM4"), 2)
    assert one["UnitPriceSecondStep"] == round(one["UnitPrice"] * 0.5, 2)
    three = inquire(InstanceType="S5.MEDIUM4", InstanceCount=3)["InstancePrice"]  # the default charge type
    assert three["UnitPrice"] == pytest.approx(3 * prices.hourly("S5.MEDIUM4"), abs=0.01)
    bigger = inquire(InstanceType="S5.LARGE8")["InstancePrice"]["UnitPrice"]
    assert bigger > one["UnitPrice"] > inquire(InstanceType="SA2.MEDIUM4")["InstancePrice"]["UnitPrice"]


def test_prepaid_is_quoted_for_the_term_with_its_discount(inquire: Any) -> None:
    month = inquire(InstanceType="S5.MEDIUM4", InstanceChargeType="PREPAID", InstanceChargePrepaid={"Period": 1})
    year = inquire(InstanceType="S5.MEDIUM4", InstanceChargeType="PREPAID", InstanceChargePrepaid={"Period": 12})
    assert month["InstancePrice"]["Discount"] == 100 and year["InstancePrice"]["Discount"] == 83
    assert year["InstancePrice"]["OriginalPrice"] == pytest.approx(
        12 * month["InstancePrice"]["OriginalPrice"], abs=0.1
    )
    assert year["InstancePrice"]["DiscountPrice"] == pytest.approx(
        0.83 * year["InstancePrice"]["OriginalPrice"], abs=0.1
    )
    traffic = inquire(InstanceType="S5.SMALL1", InternetAccessible={"InternetMaxBandwidthOut": 5})
    assert traffic["BandwidthPrice"]["ChargeUnit"] == "GB"


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"InstanceType": "S5.HUGE1"}, "InvalidParameterValue.InstanceTypeNotFound"),
        ({"InstanceType": "S5.SMALL1", "InstanceChargeType": "PREPAID"}, "MissingParameter"),
        (
            {"InstanceType": "S5.SMALL1", "InstanceChargeType": "PREPAID", "InstanceChargePrepaid": {"Period": 13}},
            "InvalidPeriod",
        ),
        ({"InstanceType": "S5.SMALL1", "Placement": {"Zone": "ap-shanghai-2"}}, "InvalidZone.MismatchRegion"),
        ({"InstanceType": "S5.SMALL1", "ImageId": "img-00000000"}, "InvalidImageId.NotFound"),
    ],
)
def test_what_a_launch_would_refuse_is_refused(inquire: Any, params: dict[str, Any], code: str) -> None:
    with pytest.raises(TencentCloudSDKException) as info:
        inquire(**params)
    assert info.value.code == code
