"""Preflight: each rule refuses bad input with a message naming the resource and the fix, and creates nothing.

Real Prefect engine, real SDK (the bad resources are made through it), real SSH; the sandbox's
state is compared before and after every refused run.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fabric import Connection
from pydantic import ValidationError
from tencentcloud.clb.v20180317 import models as clb_models
from tencentcloud.clb.v20180317.clb_client import ClbClient
from tencentcloud.cvm.v20170312 import models as cvm_models
from tencentcloud.cvm.v20170312.cvm_client import CvmClient
from tencentcloud.vpc.v20170312 import models as vpc_models
from tencentcloud.vpc.v20170312.vpc_client import VpcClient

from flows.parameters import ImageOptions, LoadBalancerOptions, ServerSelector, SessionTierParameters
from flows.scale_out import scale_out_business_tier, scale_out_session_tier
from flows.scale_out_steps.preflight import PreflightFailed
from sandbox.server import EmbeddedSandbox
from tasks.ssh_keys import known_host_name
from tasks.waiters import wait_until
from tests.flows.support import business_configs, business_params, inventory, session_params, ssh_settings
from tests.sdk import sdk_client


def _request(model: Any, params: dict[str, Any]) -> Any:
    request = model()
    request.from_json_string(json.dumps(params))
    return request


class Refusal:
    """Run a flow that preflight must refuse; check nothing changed and return the problems."""

    def __init__(self, sandbox: EmbeddedSandbox) -> None:
        self.sandbox = sandbox

    def __call__(self, flow: Any, params: Any) -> str:
        before, configs = inventory(self.sandbox), business_configs(self.sandbox)
        with pytest.raises(PreflightFailed) as refused:
            flow(params)
        assert inventory(self.sandbox) == before, "a refused run changed the cloud"
        assert business_configs(self.sandbox) == configs, "a refused run changed an sdk.config"
        message = str(refused.value)
        assert message.startswith("preflight failed, nothing was changed")
        return message


@pytest.fixture
def refused(guide: dict[str, Any], cloud_env: EmbeddedSandbox) -> Refusal:
    return Refusal(cloud_env)


def launch(sandbox: EmbeddedSandbox, guide: dict[str, Any], name: str, **placement: Any) -> str:
    """A CentOS server tagged as a business server, placed as asked (zone, project, VPC, subnet)."""
    cvm = sdk_client(sandbox, CvmClient, guide["region"])
    request = {
        "Placement": {"Zone": placement.get("zone", guide["zone"]), "ProjectId": placement.get("project", 1001)},
        "ImageId": "img-l8og963d",
        "InstanceType": "S5.SMALL2",
        "InstanceName": name,
        "VirtualPrivateCloud": {
            "VpcId": placement.get("vpc", guide["vpc"]["vpc_id"]),
            "SubnetId": placement.get("subnet", guide["subnet"]["subnet_id"]),
        },
        "TagSpecification": [{"ResourceType": "instance", "Tags": [{"Key": "tcscale:tier", "Value": "business"}]}],
    }
    (instance_id,) = cvm.RunInstances(_request(cvm_models.RunInstancesRequest, request)).InstanceIdSet
    sandbox.admin("POST", "servers/settle")
    return instance_id


def default_vpc(sandbox: EmbeddedSandbox, guide: dict[str, Any]) -> tuple[str, str]:
    """The region's default VPC and its subnet in the guide's zone."""
    vpc = sdk_client(sandbox, VpcClient, guide["region"])
    filters = {"Filters": [{"Name": "is-default", "Values": ["true"]}, {"Name": "zone", "Values": [guide["zone"]]}]}
    subnet = vpc.DescribeSubnets(_request(vpc_models.DescribeSubnetsRequest, filters)).SubnetSet[0]
    return subnet.VpcId, subnet.SubnetId


def create_load_balancer(sandbox: EmbeddedSandbox, guide: dict[str, Any], kind: str, vpc_id: str, subnet: str) -> str:
    clb = sdk_client(sandbox, ClbClient, guide["region"])
    request = {"LoadBalancerType": kind, "LoadBalancerName": f"operator-{kind.lower()}", "VpcId": vpc_id}
    if kind == "INTERNAL":
        request["SubnetId"] = subnet
    request["ProjectId"] = guide["project_id"]
    (lb_id,) = clb.CreateLoadBalancer(_request(clb_models.CreateLoadBalancerRequest, request)).LoadBalancerIds
    describe = _request(clb_models.DescribeLoadBalancersRequest, {"LoadBalancerIds": [lb_id]})
    wait_until(
        lambda: clb.DescribeLoadBalancers(describe).LoadBalancerSet[0].Status,
        done=lambda status: status == 1,
        failed=lambda _: None,
        what=f"load balancer {lb_id}",
        timeout=20,
        first_delay=0.05,
        max_delay=0.3,
    )
    return lb_id


# --- the source server ----------------------------------------------------------------------------------


def test_source_not_found(guide, refused):
    params = session_params(guide, source=ServerSelector(instance_ids=["ins-n0tthere"]))
    message = refused(scale_out_session_tier, params)
    assert "no session server matches ins-n0tthere" in message and "name the tier's servers by instance id" in message


def test_no_member_of_the_tier_can_be_imaged(guide, cloud_env, refused):
    """A selector naming several servers chooses among them (see test_rerun); none RUNNING: nothing to image."""
    cvm = sdk_client(cloud_env, CvmClient, guide["region"])
    ids = [guide["session_server"]["instance_id"], guide["business_server"]["instance_id"]]
    cvm.StopInstances(_request(cvm_models.StopInstancesRequest, {"InstanceIds": ids}))
    cloud_env.admin("POST", "servers/settle")
    params = session_params(guide, source=ServerSelector(tag_key="tcscale:seed", tag_value="guide"))
    message = refused(scale_out_session_tier, params)
    assert "none of the session servers (tag tcscale:seed=guide) is RUNNING and bindable" in message
    assert all(f"{i} STOPPED" in message for i in ids)


def test_source_not_running(guide, cloud_env, refused):
    session_id = guide["session_server"]["instance_id"]
    cvm = sdk_client(cloud_env, CvmClient, guide["region"])
    cvm.StopInstances(_request(cvm_models.StopInstancesRequest, {"InstanceIds": [session_id]}))
    cloud_env.admin("POST", "servers/settle")
    message = refused(scale_out_session_tier, session_params(guide))
    assert f"the session server {session_id} is STOPPED, not RUNNING: start it" in message


@pytest.mark.parametrize(
    "restrict, expected",
    [("PROTECTIVELY_ISOLATED", "protectively_isolated"), ("EXPIRED", "expired")],
)
def test_source_isolated_or_expired(guide, cloud_env, refused, restrict, expected):
    business_id = guide["business_server"]["instance_id"]
    body = {"instance_id": business_id, "restrict_state": restrict}
    cloud_env.admin("POST", "cvm/restrict-state", body)
    message = refused(scale_out_business_tier, business_params(guide))
    assert f"the business server {business_id} cannot be bound to a load balancer" in message
    assert expected in message and "renew or un-isolate it first" in message


# --- placement of the business servers ----------------------------------------------------------------


def test_business_servers_in_another_zone_project_or_vpc(guide, cloud_env, refused):
    vpc = sdk_client(cloud_env, VpcClient, guide["region"])
    other_zone = "ap-guangzhou-4"
    subnet_request = {
        "VpcId": guide["vpc"]["vpc_id"],
        "SubnetName": "zone-4",
        "CidrBlock": guide["vpc"]["cidr_block"].replace(".0.0/16", ".4.0/24"),
        "Zone": other_zone,
    }
    zone4_subnet = vpc.CreateSubnet(_request(vpc_models.CreateSubnetRequest, subnet_request)).Subnet.SubnetId
    default_vpc_id, default_subnet = default_vpc(cloud_env, guide)
    in_zone = launch(cloud_env, guide, "business-zone-4", zone=other_zone, subnet=zone4_subnet)
    in_project = launch(cloud_env, guide, "business-project-0", project=0)
    in_vpc = launch(cloud_env, guide, "business-default-vpc", vpc=default_vpc_id, subnet=default_subnet)
    session_id = guide["session_server"]["instance_id"]

    message = refused(scale_out_session_tier, session_params(guide))

    assert f"business server {in_zone} is in zone {other_zone}, but the source server {session_id}" in message
    assert f"business server {in_project} is in project 0, but the source server {session_id}" in message
    assert f"business server {in_vpc} is in VPC {default_vpc_id}" in message
    assert "must share region, zone and project" in message
    assert guide["business_server"]["instance_id"] not in message  # the well-placed one is not blamed


# --- parameters -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 101])
def test_count_out_of_bounds(guide, count):
    with pytest.raises(ValidationError) as refused:
        session_params(guide, count=count)
    assert "count" in str(refused.value)
    with pytest.raises(ValidationError):  # the UI form's schema says the same
        SessionTierParameters.model_validate({"count": count})


# --- an existing load balancer --------------------------------------------------------------------------


def test_existing_load_balancer_of_the_wrong_type(guide, cloud_env, refused):
    public = create_load_balancer(cloud_env, guide, "OPEN", guide["vpc"]["vpc_id"], guide["subnet"]["subnet_id"])
    port = guide["ports"]["app"]
    options = LoadBalancerOptions(load_balancer_id=public, listener_port=port, backend_port=port)
    message = refused(scale_out_session_tier, session_params(guide, load_balancer=options))
    assert f"load balancer {public} is OPEN, the INTERNAL one is needed" in message


def test_existing_load_balancer_missing(guide, refused):
    port = guide["ports"]["app"]
    options = LoadBalancerOptions(load_balancer_id="lb-n0tthere", listener_port=port, backend_port=port)
    message = refused(scale_out_session_tier, session_params(guide, load_balancer=options))
    assert "load balancer lb-n0tthere does not exist in ap-guangzhou" in message and "none to create one" in message


def test_existing_load_balancer_in_another_vpc(guide, cloud_env, refused):
    vpc_id, subnet_id = default_vpc(cloud_env, guide)
    internal = create_load_balancer(cloud_env, guide, "INTERNAL", vpc_id, subnet_id)
    port = guide["ports"]["app"]
    options = LoadBalancerOptions(load_balancer_id=internal, listener_port=port, backend_port=port)
    message = refused(scale_out_session_tier, session_params(guide, load_balancer=options))
    assert f"load balancer {internal} is in VPC {vpc_id}, the servers in {guide['vpc']['vpc_id']}" in message


# --- the image ------------------------------------------------------------------------------------------


def test_image_name_taken(guide, cloud_env, refused):
    cvm = sdk_client(cloud_env, CvmClient, guide["region"])
    request = {"InstanceId": guide["session_server"]["instance_id"], "ImageName": "session-golden"}
    image_id = cvm.CreateImage(_request(cvm_models.CreateImageRequest, request)).ImageId
    message = refused(scale_out_session_tier, session_params(guide, image=ImageOptions(name="session-golden")))
    assert f"an image named 'session-golden' already exists ({image_id}" in message
    assert "set image.reuse=true" in message


# --- the business servers over SSH ----------------------------------------------------------------------


def test_sdk_config_not_json(guide, cloud_env, refused):
    business = guide["business_server"]
    garbage = b'{"serverHost": "127.100.0.2", "authServerUrl": \n'
    with (
        Connection(
            business["private_ip"],
            user="root",
            port=guide["ports"]["ssh"],
            connect_kwargs={"key_filename": guide["key_pair"]["private_key_file"], "look_for_keys": False},
        ) as conn,
        conn.sftp().open(business["sdk_config"], "wb") as file,
    ):
        file.write(garbage)
    message = refused(scale_out_session_tier, session_params(guide))
    assert f"business server {business['instance_id']} ({business['private_ip']})" in message
    assert f"{business['sdk_config']}: not valid JSON: Expecting value at line 2 column 1" in message


def test_ssh_refused_with_a_wrong_key(guide, tmp_path, refused):
    wrong = tmp_path / "wrong.pem"
    key = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    wrong.write_bytes(key)
    params = session_params(guide, ssh=ssh_settings(guide).model_copy(update={"key_file": wrong}))
    message = refused(scale_out_session_tier, params)
    business = guide["business_server"]
    host = known_host_name(business["private_ip"], guide["ports"]["ssh"])
    assert f"business server {business['instance_id']} ({business['private_ip']}): {host}: authentication failed" in (
        message
    )
    assert "PRIVATE KEY" not in message
