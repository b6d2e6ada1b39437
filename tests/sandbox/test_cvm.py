"""CVM 2017-03-12 conformance, through the real SDK: instance types, images, instances and their lifecycles."""

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.cvm.v20170312 import cvm_client, cvm_client_async, models

from tests.sdk import poll as poll_state

ZONE, OTHER_ZONE = "ap-guangzhou-3", "ap-guangzhou-4"
CENTOS, WINDOWS = "img-l8og963d", "img-9id7emv7"
# The spec marks these non-nullable, but their documentation says "后付费模式本项为null" (null when postpaid).
NULL_WHEN_POSTPAID = {"Instance.RenewFlag", "Instance.ExpiredTime"}
SPEC = json.loads((Path(__file__).parents[2] / "sandbox" / "specs" / "cvm-2017-03-12.json").read_text())


# ---- helpers -----------------------------------------------------------------------------------
def call(sdk: Any, action: str, params: dict[str, Any] | None = None) -> Any:
    """One typed SDK call: the request model built from a dict, the response model returned."""
    request = getattr(models, f"{action}Request")()
    request.from_json_string(json.dumps(params or {}))
    return getattr(sdk, action)(request)


def raw(sdk: Any, action: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The same call, answered as the JSON the wire carried (to check exact shapes)."""
    return sdk.call_json(action, params or {})["Response"]


def code_of(sdk: Any, action: str, params: dict[str, Any] | None = None) -> str:
    with pytest.raises(TencentCloudSDKException) as info:
        call(sdk, action, params)
    return info.value.code


def wait_until(check: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    return poll_state(check, what=what, timeout=timeout)


def launch(sdk: Any, count: int = 1, **params: Any) -> list[str]:
    body = {"Placement": {"Zone": ZONE}, "ImageId": CENTOS, "InstanceCount": count, **params}
    return list(call(sdk, "RunInstances", body).InstanceIdSet)


def instances(sdk: Any, ids: list[str]) -> dict[str, Any]:
    answer = call(sdk, "DescribeInstances", {"InstanceIds": ids})
    return {i.InstanceId: i for i in answer.InstanceSet}


def states(sdk: Any, ids: list[str]) -> dict[str, str]:
    return {i: s.InstanceState for i, s in instances(sdk, ids).items()}


def wait_state(sdk: Any, ids: list[str], state: str, timeout: float = 5.0) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        found = instances(sdk, ids)
        return found if len(found) == len(ids) and all(i.InstanceState == state for i in found.values()) else None

    return wait_until(reached, timeout, f"{ids} {state}")


def image_state(sdk: Any, image_id: str) -> str | None:
    found = call(sdk, "DescribeImages", {"ImageIds": [image_id]}).ImageSet
    return found[0].ImageState if found else None


def total(sdk: Any, filters: list[dict[str, Any]] | None = None, **params: Any) -> int:
    return call(sdk, "DescribeInstances", {"Filters": filters or [], **params}).TotalCount


def assert_shape(value: Any, object_name: str) -> None:
    """Every member the spec says a response always carries is there, and null only where allowed."""
    for member in SPEC["objects"][object_name]:
        if not member.get("output_required"):
            continue
        name = member["name"]
        assert name in value, f"{object_name}.{name} missing"
        if value[name] is None:
            documented = f"{object_name}.{name}" in NULL_WHEN_POSTPAID
            assert member.get("value_allowed_null") or documented, f"{object_name}.{name} is null"
        elif member["type"] == "object" and member["member"] in SPEC["objects"]:
            assert_shape(value[name], member["member"])


@pytest.fixture
def cvm(client) -> Any:
    return client(cvm_client.CvmClient)


# ---- instance types and public images --------------------------------------------------------------
def test_instance_type_configs(cvm):
    every = call(cvm, "DescribeInstanceTypeConfigs").InstanceTypeConfigSet
    assert {(c.Zone, c.InstanceType) for c in every} >= {(ZONE, "S5.SMALL2"), (OTHER_ZONE, "SA2.MEDIUM4")}
    filters = [{"Name": "zone", "Values": [ZONE]}, {"Name": "instance-family", "Values": ["S5"]}]
    some = call(cvm, "DescribeInstanceTypeConfigs", {"Filters": filters}).InstanceTypeConfigSet
    assert {c.InstanceType for c in some} >= {"S5.SMALL1", "S5.SMALL2", "S5.MEDIUM2", "S5.MEDIUM4", "S5.LARGE8"}
    assert all(c.InstanceFamily == "S5" for c in some)
    assert {c.Zone for c in some} == {ZONE}
    medium = next(c for c in some if c.InstanceType == "S5.MEDIUM4")
    assert (medium.CPU, medium.Memory, medium.GPU) == (2, 4, 0)


def test_public_images(cvm):
    public = call(cvm, "DescribeImages", {"Filters": [{"Name": "image-type", "Values": ["PUBLIC_IMAGE"]}]})
    assert public.TotalCount == 3
    assert {i.Platform for i in public.ImageSet} == {"CentOS", "TencentOS", "Windows"}
    assert all(i.ImageState == "NORMAL" and i.ImageSource == "OFFICIAL" for i in public.ImageSet)
    fuzzy = call(cvm, "DescribeImages", {"Filters": [{"Name": "platform", "Values": ["win"]}]})
    assert [i.ImageId for i in fuzzy.ImageSet] == [WINDOWS]
    assert_shape(raw(cvm, "DescribeImages", {"ImageIds": [CENTOS]})["ImageSet"][0], "Image")
    last = call(cvm, "DescribeImages", {"Offset": 2, "Limit": 2})
    assert last.TotalCount == 3 and len(last.ImageSet) == 1


def test_describe_images_errors(cvm):
    both = {"ImageIds": [CENTOS], "Filters": [{"Name": "image-type", "Values": ["PUBLIC_IMAGE"]}]}
    assert code_of(cvm, "DescribeImages", both) == "InvalidParameter.InvalidParameterCoexistImageIdsFilters"
    assert code_of(cvm, "DescribeImages", {"ImageIds": ["img-bad"]}) == "InvalidImageId.Malformed"
    assert call(cvm, "DescribeImages", {"ImageIds": ["img-00000000"]}).TotalCount == 0
    assert code_of(cvm, "DescribeImages", {"Filters": [{"Name": "colour", "Values": ["x"]}]}) == "InvalidFilter"
    assert code_of(cvm, "DescribeImages", {"Limit": 101}) == "InvalidParameterValueLimit"


# ---- RunInstances ---------------------------------------------------------------------------------------
def test_run_instances_happy_path(cvm):
    key = call(cvm, "CreateKeyPair", {"KeyName": "ops", "ProjectId": 0}).KeyPair.KeyId
    request = models.RunInstancesRequest()
    request.Placement = models.Placement()
    request.Placement.Zone, request.Placement.ProjectId = ZONE, 1001
    request.ImageId, request.InstanceType, request.InstanceCount, request.InstanceName = CENTOS, "S5.MEDIUM4", 2, "web"
    request.InternetAccessible = models.InternetAccessible()
    request.InternetAccessible.InternetMaxBandwidthOut = 10
    request.LoginSettings = models.LoginSettings()
    request.LoginSettings.KeyIds = [key]
    tag = models.Tag()
    tag.Key, tag.Value = "tier", "business"
    spec = models.TagSpecification()
    spec.ResourceType, spec.Tags = "instance", [tag]
    request.TagSpecification = [spec]
    ids = list(cvm.RunInstances(request).InstanceIdSet)
    assert len(ids) == 2 and all(i.startswith("ins-") for i in ids)

    found = wait_state(cvm, ids, "RUNNING")
    first = found[ids[0]]
    assert {found[i].InstanceName for i in ids} == {"web1", "web2"}
    assert (first.Placement.Zone, first.Placement.ProjectId) == (ZONE, 1001)
    assert (first.CPU, first.Memory, first.InstanceType) == (2, 4, "S5.MEDIUM4")
    assert (first.LatestOperation, first.LatestOperationState) == ("RunInstances", "SUCCESS")
    assert first.RestrictState == "NORMAL" and first.ExpiredTime is None
    assert first.InternetAccessible.InternetMaxBandwidthOut == 10 and len(first.PublicIpAddresses) == 1
    assert first.PrivateIpAddresses[0].startswith("127.") and first.VirtualPrivateCloud.SubnetId.startswith("subnet-")
    assert first.LoginSettings.KeyIds == [key]
    assert first.SecurityGroupIds and first.SecurityGroupIds[0].startswith("sg-")
    assert [(t.Key, t.Value) for t in first.Tags] == [("tier", "business")]
    assert first.OsName.startswith("CentOS") and first.DefaultLoginUser == "root"
    assert len({found[i].PrivateIpAddresses[0] for i in ids}) == 2
    pairs = call(cvm, "DescribeKeyPairs", {"KeyIds": [key]}).KeyPairSet
    assert sorted(pairs[0].AssociatedInstanceIds) == sorted(ids)
    for shown in raw(cvm, "DescribeInstances", {"InstanceIds": ids})["InstanceSet"]:
        assert_shape(shown, "Instance")


REJECTED_LAUNCHES = [
    ({"Placement": None}, "MissingParameter"),
    ({"ImageId": None}, "MissingParameter"),
    ({"Placement": {"Zone": "ap-shanghai-2"}}, "InvalidZone.MismatchRegion"),
    ({"Placement": {"Zone": ZONE, "ProjectId": 42}}, "InvalidProjectId.NotFound"),
    ({"InstanceType": "S9.HUGE512"}, "InvalidParameterValue.InstanceTypeNotFound"),
    ({"InstanceType": "tiny"}, "InvalidInstanceType.Malformed"),
    ({"InstanceCount": 0}, "InvalidParameterValue.Range"),
    ({"InstanceCount": 501}, "InvalidParameterValue.Range"),
    ({"ImageId": "img-00000000"}, "InvalidImageId.NotFound"),
    ({"ImageId": "centos"}, "InvalidImageId.Malformed"),
    ({"LoginSettings": {"KeyIds": ["skey-00000000"]}}, "InvalidKeyPairId.NotFound"),
    (
        {"ImageId": WINDOWS, "LoginSettings": {"KeyIds": ["skey-00000000"]}},
        "UnsupportedOperation.KeyPairUnsupportedWindows",
    ),
    ({"SecurityGroupIds": ["sg-00000000"]}, "InvalidSecurityGroupId.NotFound"),
    ({"SecurityGroupIds": ["default"]}, "InvalidSgId.Malformed"),
    (
        {"VirtualPrivateCloud": {"VpcId": "vpc-00000000", "SubnetId": "subnet-00000000"}},
        "InvalidParameterValue.VpcIdNotExist",
    ),
    ({"InternetAccessible": {"InternetMaxBandwidthOut": -1}}, "InvalidParameterValue.Range"),
    ({"ClientToken": "x" * 65}, "InvalidClientToken.TooLong"),
    ({"InstanceChargeType": "PREPAID"}, "MissingParameter"),
    ({"InstanceChargeType": "PREPAID", "InstanceChargePrepaid": {"Period": 13}}, "InvalidPeriod"),
    ({"InstanceName": "n" * 129}, "InvalidInstanceName.TooLong"),
]


def test_run_instances_rejects(cvm):
    # one test, not a parametrized one: each sandbox reset costs more than all these calls together
    for params, code in REJECTED_LAUNCHES:
        body = {"Placement": {"Zone": ZONE}, "ImageId": CENTOS, **params}
        assert code_of(cvm, "RunInstances", {k: v for k, v in body.items() if v is not None}) == code, params
    unknown = {"Placement": {"Zone": ZONE}, "ImageId": CENTOS, "Bogus": 1}  # the typed SDK model would drop it
    with pytest.raises(TencentCloudSDKException) as info:
        cvm.call_json("RunInstances", unknown)
    assert info.value.code == "UnknownParameter"
    assert total(cvm) == 0  # nothing was created, nothing allocated


def test_run_instances_in_a_chosen_subnet(cvm):
    (first,) = launch(cvm)
    network = instances(cvm, [first])[first].VirtualPrivateCloud
    vpc, subnet = network.VpcId, network.SubnetId
    ids = launch(cvm, VirtualPrivateCloud={"VpcId": vpc, "SubnetId": subnet})
    assert instances(cvm, ids)[ids[0]].VirtualPrivateCloud.SubnetId == subnet
    elsewhere = {"Placement": {"Zone": OTHER_ZONE}, "ImageId": CENTOS}
    mismatch = {**elsewhere, "VirtualPrivateCloud": {"VpcId": vpc, "SubnetId": subnet}}
    assert code_of(cvm, "RunInstances", mismatch) == "InvalidParameterValue.SubnetIdZoneIdNotMatch"
    missing = {**elsewhere, "VirtualPrivateCloud": {"VpcId": vpc, "SubnetId": "subnet-00000000"}}
    assert code_of(cvm, "RunInstances", missing) == "InvalidParameterValue.SubnetNotExist"
    # without VirtualPrivateCloud, the zone's default subnet of the same default VPC
    (other,) = launch(cvm, Placement={"Zone": OTHER_ZONE})
    other_network = instances(cvm, [other])[other].VirtualPrivateCloud
    assert other_network.VpcId == vpc and other_network.SubnetId != subnet


def test_client_token_gives_the_same_instances(cvm):
    ids = launch(cvm, 3, ClientToken="scale-out-42", InstanceName="a")
    again = launch(cvm, 1, ClientToken="scale-out-42", InstanceName="b", InstanceType="S5.LARGE8")
    assert again == ids
    assert total(cvm) == 3
    assert launch(cvm, 1, ClientToken="another") != ids and total(cvm) == 4


def test_dry_run_checks_everything_and_creates_nothing(cvm):
    assert code_of(cvm, "RunInstances", {"Placement": {"Zone": ZONE}, "ImageId": CENTOS, "DryRun": True}) == (
        "DryRunOperation"
    )
    bad = {"Placement": {"Zone": ZONE}, "ImageId": CENTOS, "InstanceType": "S9.HUGE512", "DryRun": True}
    assert code_of(cvm, "RunInstances", bad) == "InvalidParameterValue.InstanceTypeNotFound"
    assert total(cvm) == 0
    (instance,) = launch(cvm)
    dry_image = {"InstanceId": instance, "ImageName": "dry", "DryRun": True}
    assert code_of(cvm, "CreateImage", dry_image) == "DryRunOperation"
    assert (
        call(cvm, "DescribeImages", {"Filters": [{"Name": "image-type", "Values": ["PRIVATE_IMAGE"]}]}).TotalCount == 0
    )


def test_instance_names_patterns_prepaid_and_protection(cvm):
    ids = launch(cvm, 2, InstanceName="session-{R:7,F:3}")
    assert sorted(i.InstanceName for i in instances(cvm, ids).values()) == ["session-007", "session-008"]
    prepaid = launch(cvm, InstanceChargeType="PREPAID", InstanceChargePrepaid={"Period": 1}, DisableApiTermination=True)
    shown = instances(cvm, prepaid)[prepaid[0]]
    assert shown.InstanceChargeType == "PREPAID" and shown.ExpiredTime and shown.RenewFlag
    assert code_of(cvm, "TerminateInstances", {"InstanceIds": prepaid}) == "UnsupportedOperation.InstancesProtected"


# ---- DescribeInstances ---------------------------------------------------------------------------------
def test_describe_instances_filters_and_pages(cvm):
    session = launch(
        cvm, 3, TagSpecification=[{"ResourceType": "instance", "Tags": [{"Key": "tier", "Value": "session"}]}]
    )
    business = launch(
        cvm,
        2,
        Placement={"Zone": OTHER_ZONE, "ProjectId": 1001},
        InternetAccessible={"InternetMaxBandwidthOut": 5},
        TagSpecification=[{"ResourceType": "instance", "Tags": [{"Key": "tier", "Value": "business"}]}],
    )
    one = instances(cvm, [session[0]])[session[0]]

    def named(name: str, *values: str) -> list[dict[str, Any]]:
        return [{"Name": name, "Values": list(values)}]

    assert total(cvm) == 5
    assert total(cvm, named("zone", OTHER_ZONE)) == 2
    assert total(cvm, named("project-id", "1001")) == 2
    assert total(cvm, named("tag:tier", "session")) == 3
    assert total(cvm, named("tag-key", "tier")) == 5
    assert total(cvm, named("tag-value", "business", "session")) == 5
    assert total(cvm, named("instance-state", "RUNNING")) == 5
    assert total(cvm, named("instance-id", *session[:2])) == 2
    assert total(cvm, named("private-ip-address", one.PrivateIpAddresses[0])) == 1
    assert total(cvm, named("vpc-id", one.VirtualPrivateCloud.VpcId)) == 5
    assert total(cvm, named("subnet-id", one.VirtualPrivateCloud.SubnetId)) == 3
    assert total(cvm, named("security-group-id", one.SecurityGroupIds[0])) == 5
    assert total(cvm, named("image-id", CENTOS)) == 5
    assert total(cvm, named("instance-name", "未命名")) == 5
    public = instances(cvm, business)[business[0]].PublicIpAddresses[0]
    assert total(cvm, named("public-ip-address", public)) == 1
    assert total(cvm, [*named("zone", ZONE), *named("tag:tier", "business")]) == 0  # filters AND

    pages = [call(cvm, "DescribeInstances", {"Offset": offset, "Limit": 2}) for offset in (0, 2, 4)]
    assert [len(p.InstanceSet) for p in pages] == [2, 2, 1] and {p.TotalCount for p in pages} == {5}
    assert {i.InstanceId for p in pages for i in p.InstanceSet} == {*session, *business}

    both = {"InstanceIds": session, "Filters": named("zone", ZONE)}
    assert code_of(cvm, "DescribeInstances", both) == "InvalidParameterCombination"
    assert code_of(cvm, "DescribeInstances", {"InstanceIds": ["ins-1122"]}) == "InvalidInstanceId.Malformed"
    assert code_of(cvm, "DescribeInstances", {"Limit": 101}) == "InvalidParameterValueLimit"
    assert code_of(cvm, "DescribeInstances", {"InstanceIds": [f"ins-{n:08d}" for n in range(101)]}) == (
        "InvalidParameterValue.LimitExceeded"
    )
    assert (
        code_of(cvm, "DescribeInstances", {"Filters": named("zone", *"abcdef")}) == "InvalidFilterValue.LimitExceeded"
    )
    assert code_of(cvm, "DescribeInstances", {"Filters": named("colour", "red")}) == "InvalidFilter"
    assert call(cvm, "DescribeInstances", {"InstanceIds": ["ins-00000000"]}).TotalCount == 0


def test_describe_instances_status(cvm):
    ids = launch(cvm, 3)
    answer = call(cvm, "DescribeInstancesStatus", {"InstanceIds": ids[:2]})
    assert answer.TotalCount == 2 and {s.InstanceState for s in answer.InstanceStatusSet} == {"RUNNING"}
    paged = call(cvm, "DescribeInstancesStatus", {"Limit": 1, "Offset": 1})
    assert paged.TotalCount == 3 and len(paged.InstanceStatusSet) == 1


def test_describe_instances_over_get(client, cvm):
    launch(cvm, 2, Placement={"Zone": OTHER_ZONE})
    launch(cvm, 1)
    get = client(cvm_client.CvmClient, method="GET")
    answer = call(get, "DescribeInstances", {"Filters": [{"Name": "zone", "Values": [OTHER_ZONE]}], "Limit": 1})
    assert (
        answer.TotalCount == 2 and len(answer.InstanceSet) == 1 and answer.InstanceSet[0].Placement.Zone == OTHER_ZONE
    )


def test_async_client(client, cvm):
    async def scenario() -> tuple[list[str], str]:
        sdk = client(cvm_client_async.CvmClient)
        request = models.RunInstancesRequest()
        request.from_json_string(json.dumps({"Placement": {"Zone": ZONE}, "ImageId": CENTOS, "InstanceCount": 2}))
        ids = list((await sdk.RunInstances(request)).InstanceIdSet)
        describe = models.DescribeInstancesRequest()
        describe.InstanceIds = ids
        found = (await sdk.DescribeInstances(describe)).InstanceSet
        return ids, {i.InstanceState for i in found}.pop()

    ids, state = asyncio.run(scenario())
    assert len(ids) == 2 and state == "RUNNING"


# ---- power operations and termination ------------------------------------------------------------------
def test_stop_start_reboot_terminate(cvm, sandbox):
    ids = launch(cvm, 2)
    wait_state(cvm, ids, "RUNNING")
    assert code_of(cvm, "StartInstances", {"InstanceIds": ids}) == "UnsupportedOperation.InstanceStateRunning"

    call(cvm, "StopInstances", {"InstanceIds": [ids[0]]})
    stopped = wait_state(cvm, [ids[0]], "STOPPED")[ids[0]]
    assert (stopped.LatestOperation, stopped.LatestOperationState) == ("StopInstances", "SUCCESS")
    assert code_of(cvm, "StopInstances", {"InstanceIds": ids}) == "UnsupportedOperation.InstanceStateStopped"
    assert states(cvm, ids)[ids[1]] == "RUNNING"  # a refused batch changes nothing
    assert code_of(cvm, "RebootInstances", {"InstanceIds": [ids[0]]}) == "UnsupportedOperation.InstanceStateStopped"

    call(cvm, "StartInstances", {"InstanceIds": [ids[0]]})
    started = wait_state(cvm, [ids[0]], "RUNNING")[ids[0]]
    assert started.LatestOperation == "StartInstances"
    call(cvm, "RebootInstances", {"InstanceIds": ids})
    rebooted = wait_state(cvm, ids, "RUNNING")
    assert {i.LatestOperation for i in rebooted.values()} == {"RebootInstances"}

    address = rebooted[ids[0]].PrivateIpAddresses[0]
    call(cvm, "TerminateInstances", {"InstanceIds": ids})
    wait_until(lambda: total(cvm) == 0, what="terminated instances gone")
    assert code_of(cvm, "StopInstances", {"InstanceIds": ids}) == "InvalidInstanceId.NotFound"
    assert code_of(cvm, "TerminateInstances", {"InstanceIds": ["bad"]}) == "InvalidInstanceId.Malformed"
    # the terminated instance's private address went back to its subnet
    (replacement,) = launch(cvm)
    assert instances(cvm, [replacement])[replacement].PrivateIpAddresses[0] == address


def test_instance_events(cvm, sandbox):
    seen: list[tuple[str, str]] = []
    active = True

    def listener(instance: Any) -> None:
        if active:
            seen.append((instance.instance_id, instance.state))

    sandbox.cloud.events.subscribe("instance.state", listener)
    try:
        (instance,) = launch(cvm)
        wait_state(cvm, [instance], "RUNNING")
        call(cvm, "TerminateInstances", {"InstanceIds": [instance]})
        wait_until(lambda: (instance, "TERMINATED") in seen, what="TERMINATED event")
    finally:
        active = False
    assert [state for _, state in seen] == ["PENDING", "RUNNING", "TERMINATING", "TERMINATED"]


def test_restrict_state_helper(cvm, sandbox):
    (instance,) = launch(cvm)
    body = {"instance_id": instance, "restrict_state": "EXPIRED", "expired_time": "2030-01-01T00:00:00Z"}
    sandbox.admin("POST", "cvm/restrict-state", body)
    shown = instances(cvm, [instance])[instance]
    assert (shown.RestrictState, shown.ExpiredTime, shown.IsolatedSource) == (
        "EXPIRED",
        "2030-01-01T00:00:00Z",
        "EXPIRE",
    )
    # through the admin route, not a direct call: its event reaches listeners on the sandbox's own loop
    sandbox.admin("POST", "cvm/restrict-state", {"instance_id": instance, "restrict_state": "PROTECTIVELY_ISOLATED"})
    assert instances(cvm, [instance])[instance].RestrictState == "PROTECTIVELY_ISOLATED"


# ---- images ----------------------------------------------------------------------------------------------
def test_create_describe_and_delete_image(cvm):
    (source,) = launch(cvm, InstanceType="S5.MEDIUM4")
    wait_state(cvm, [source], "RUNNING")
    tags = [{"ResourceType": "image", "Tags": [{"Key": "app", "Value": "session"}]}]
    image_id = call(
        cvm, "CreateImage", {"InstanceId": source, "ImageName": "session-v1", "TagSpecification": tags}
    ).ImageId
    assert image_id.startswith("img-")
    assert wait_until(lambda: image_state(cvm, image_id) == "NORMAL", what="image NORMAL")

    private = call(cvm, "DescribeImages", {"Filters": [{"Name": "image-type", "Values": ["PRIVATE_IMAGE"]}]})
    assert [i.ImageId for i in private.ImageSet] == [image_id]
    image = private.ImageSet[0]
    assert (image.ImageName, image.Platform, image.ImageSource) == ("session-v1", "CentOS", "CREATE_IMAGE")
    assert [(t.Key, t.Value) for t in image.Tags] == [("app", "session")]
    by_tag = call(cvm, "DescribeImages", {"Filters": [{"Name": "tag:app", "Values": ["session"]}]})
    assert [i.ImageId for i in by_tag.ImageSet] == [image_id]
    by_name = call(cvm, "DescribeImages", {"Filters": [{"Name": "image-name", "Values": ["session"]}]})
    assert [i.ImageId for i in by_name.ImageSet] == [image_id]
    assert_shape(raw(cvm, "DescribeImages", {"ImageIds": [image_id]})["ImageSet"][0], "Image")

    duplicate = {"InstanceId": source, "ImageName": "session-v1"}
    assert code_of(cvm, "CreateImage", duplicate) == "InvalidImageName.Duplicate"
    assert code_of(cvm, "CreateImage", {"InstanceId": "ins-00000000", "ImageName": "x"}) == "InvalidInstanceId.NotFound"
    assert code_of(cvm, "CreateImage", {"ImageName": "x"}) == "MissingParameter.AtLeastOne"
    assert code_of(cvm, "CreateImage", {"InstanceId": source, "ImageName": "n" * 61}) == "InvalidParameterValue.TooLong"

    # servers launched from the private image carry its OS
    (copy,) = launch(cvm, ImageId=image_id)
    assert wait_state(cvm, [copy], "RUNNING")[copy].ImageId == image_id
    call(cvm, "StopInstances", {"InstanceIds": [source]})
    wait_state(cvm, [source], "STOPPED")
    stopped_image = call(cvm, "CreateImage", {"InstanceId": source, "ImageName": "from-stopped"}).ImageId
    wait_until(lambda: image_state(cvm, stopped_image) == "NORMAL", what="image of a stopped server")

    assert code_of(cvm, "DeleteImages", {"ImageIds": [CENTOS]}) == "UnauthorizedOperation.ImageNotBelongToAccount"
    assert code_of(cvm, "DeleteImages", {"ImageIds": ["img-00000000"]}) == "InvalidImageId.NotFound"
    assert code_of(cvm, "DeleteImages", {"ImageIds": [image_id], "DryRun": True}) == "DryRunOperation"
    call(cvm, "DeleteImages", {"ImageIds": [image_id, stopped_image]})
    assert image_state(cvm, image_id) is None
    assert code_of(cvm, "RunInstances", {"Placement": {"Zone": ZONE}, "ImageId": image_id}) == "InvalidImageId.NotFound"


def test_image_creating_event_carries_the_instance(cvm, sandbox):
    seen: list[tuple[str, str]] = []
    active = True

    def listener(image: Any, instance: Any) -> None:
        if active:
            seen.append((image.image_id, instance.instance_id))

    sandbox.cloud.events.subscribe("image.creating", listener)
    try:
        (source,) = launch(cvm)
        wait_state(cvm, [source], "RUNNING")
        image_id = call(cvm, "CreateImage", {"InstanceId": source, "ImageName": "evt"}).ImageId
    finally:
        active = False
    assert seen == [(image_id, source)]


# ---- asynchronous failures (fault rules) -------------------------------------------------------------------
def test_launch_failure_is_terminal(cvm, sandbox):
    sandbox.admin("POST", "faults", {"service": "cvm", "action": "RunInstances", "async_failure": "no capacity"})
    ids = launch(cvm, 2)
    failed = wait_state(cvm, ids, "LAUNCH_FAILED")
    shown = failed[ids[0]]
    assert (shown.LatestOperationState, shown.LatestOperationErrorMsg) == ("FAILED", "no capacity")
    assert code_of(cvm, "StopInstances", {"InstanceIds": ids}) == "UnsupportedOperation.InstanceStateLaunchFailed"
    assert code_of(cvm, "CreateImage", {"InstanceId": ids[0], "ImageName": "x"}) == (
        "UnsupportedOperation.InstanceStateLaunchFailed"
    )
    call(cvm, "TerminateInstances", {"InstanceIds": ids})
    wait_until(lambda: total(cvm) == 0, what="failed instances terminated")


def test_image_creation_failure(cvm, sandbox):
    (source,) = launch(cvm)
    wait_state(cvm, [source], "RUNNING")
    sandbox.admin("POST", "faults", {"service": "cvm", "action": "CreateImage", "async_failure": "disk busy"})
    image_id = call(cvm, "CreateImage", {"InstanceId": source, "ImageName": "doomed"}).ImageId
    assert wait_until(lambda: image_state(cvm, image_id) == "CREATEFAILED", what="CREATEFAILED")
    assert code_of(cvm, "RunInstances", {"Placement": {"Zone": ZONE}, "ImageId": image_id}) == (
        "InvalidImageId.IncorrectState"
    )


def test_failed_stop_leaves_the_server_running(cvm, sandbox):
    (instance,) = launch(cvm)
    wait_state(cvm, [instance], "RUNNING")
    sandbox.admin("POST", "faults", {"service": "cvm", "action": "StopInstances", "async_failure": "guest hung"})
    call(cvm, "StopInstances", {"InstanceIds": [instance]})
    shown = wait_until(
        lambda: (i := instances(cvm, [instance])[instance]).LatestOperationState == "FAILED" and i, what="failed stop"
    )
    assert (shown.InstanceState, shown.LatestOperationErrorMsg) == ("RUNNING", "guest hung")


# ---- the realistic latency profile -------------------------------------------------------------------------
def test_realistic_profile_with_a_small_time_scale(cvm, sandbox):
    # boot 1.5 s, image 6 s, stop 500 ms, terminate 250 ms: each transitional state lasts longer than the gap between
    # two requests on a busy machine (at 0.005, terminate's 25 ms was sometimes over before the next request)
    sandbox.admin("POST", "clock", {"profile": "realistic", "time_scale": 0.05})
    (instance,) = launch(cvm)
    first = instances(cvm, [instance])[instance]
    assert (first.InstanceState, first.LatestOperationState) == ("PENDING", "OPERATING")
    wait_state(cvm, [instance], "RUNNING", timeout=20)
    assert code_of(cvm, "TerminateInstances", {"InstanceIds": ["ins-00000000"]}) == "InvalidInstanceId.NotFound"

    image_id = call(cvm, "CreateImage", {"InstanceId": instance, "ImageName": "slow"}).ImageId
    assert image_state(cvm, image_id) == "CREATING"
    assert code_of(cvm, "DeleteImages", {"ImageIds": [image_id]}) == "InvalidImageId.IncorrectState"
    assert code_of(cvm, "CreateImage", {"InstanceId": instance, "ImageName": "again"}) == (
        "OperationDenied.InstanceOperationInProgress"
    )
    wait_until(lambda: image_state(cvm, image_id) == "NORMAL", timeout=30, what="image NORMAL")

    call(cvm, "StopInstances", {"InstanceIds": [instance]})
    assert states(cvm, [instance])[instance] == "STOPPING"
    wait_state(cvm, [instance], "STOPPED", timeout=20)
    call(cvm, "TerminateInstances", {"InstanceIds": [instance]})
    assert states(cvm, [instance])[instance] == "TERMINATING"
    wait_until(lambda: total(cvm) == 0, what="terminated")


def test_realistic_profile_with_an_advanced_clock(cvm, sandbox):
    sandbox.admin("POST", "clock", {"profile": "realistic", "time_scale": 1.0})
    (instance,) = launch(cvm)
    assert code_of(cvm, "StopInstances", {"InstanceIds": [instance]}) == "UnsupportedOperation.InstanceStatePending"
    sandbox.admin("POST", "clock", {"advance": 29})
    assert states(cvm, [instance])[instance] == "PENDING"
    sandbox.admin("POST", "clock", {"advance": 2})
    assert states(cvm, [instance])[instance] == "RUNNING"
