"""Tencent's own CLI, tccli, completes issue 2's scenario against the sandbox.

tccli (with the full SDK, ~350 MB) is no project dependency: this suite installs it aside into
~/.cache/tcscale/tccli-venv when asked (`TCSCALE_TEST_TCCLI=1 uv run pytest -m tccli`).
"""

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.sdk import poll as poll_state

pytestmark = [
    pytest.mark.tccli,
    pytest.mark.skipif(os.environ.get("TCSCALE_TEST_TCCLI") != "1", reason="set TCSCALE_TEST_TCCLI=1 to run"),
]

VENV = Path.home() / ".cache" / "tcscale" / "tccli-venv"


@pytest.fixture(scope="module")
def tccli_path() -> Path:
    binary = VENV / "bin" / "tccli"
    if not binary.exists():
        uv = shutil.which("uv") or "uv"
        subprocess.run([uv, "venv", "-q", str(VENV)], check=True)
        subprocess.run([uv, "pip", "install", "-q", "--python", str(VENV / "bin" / "python"), "tccli"], check=True)
    return binary


@pytest.fixture
def tccli(tccli_path: Path, sandbox):
    config = sandbox.cloud.config
    env = {**os.environ, "TENCENTCLOUD_SECRET_ID": config.secret_id, "TENCENTCLOUD_SECRET_KEY": config.secret_key}

    def run(service: str, action: str, **params: Any) -> dict[str, Any]:
        args = [str(tccli_path), service, action, "--region", "ap-guangzhou", "--endpoint", sandbox.url]
        for name, value in params.items():
            args += [f"--{name}", value if isinstance(value, str) else json.dumps(value)]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads(done.stdout)

    return run


def poll(read, done, timeout: float = 20.0):
    return poll_state(read, done, timeout=timeout)


def test_tccli_scenario(tccli):
    key_id = tccli("cvm", "CreateKeyPair", KeyName="cli", ProjectId=0)["KeyPair"]["KeyId"]
    run = {
        "Placement": {"Zone": "ap-guangzhou-3", "ProjectId": 0},
        "ImageId": "img-l8og963d",
        "LoginSettings": {"KeyIds": [key_id]},
    }
    (source,) = tccli("cvm", "RunInstances", **run, ClientToken="cli-source")["InstanceIdSet"]
    states = lambda ids: [i["InstanceState"] for i in tccli("cvm", "DescribeInstances", InstanceIds=ids)["InstanceSet"]]  # noqa: E731
    poll(lambda: states([source]), lambda s: s == ["RUNNING"])

    image_id = tccli("cvm", "CreateImage", InstanceId=source, ImageName="cli-image")["ImageId"]
    poll(
        lambda: tccli("cvm", "DescribeImages", ImageIds=[image_id])["ImageSet"][0]["ImageState"],
        lambda s: s == "NORMAL",
    )

    scale = {**run, "ImageId": image_id, "InstanceCount": 3, "ClientToken": "cli-scale-out"}
    ids = tccli("cvm", "RunInstances", **scale)["InstanceIdSet"]
    assert tccli("cvm", "RunInstances", **scale)["InstanceIdSet"] == ids
    poll(lambda: states(ids), lambda s: s == ["RUNNING"] * 3)
    page = tccli("cvm", "DescribeInstances", Filters=[{"Name": "image-id", "Values": [image_id]}], Limit=2, Offset=2)
    assert page["TotalCount"] == 3 and len(page["InstanceSet"]) == 1

    instance = tccli("cvm", "DescribeInstances", InstanceIds=[source])["InstanceSet"][0]
    network = instance["VirtualPrivateCloud"]
    created = tccli(
        "clb", "CreateLoadBalancer", LoadBalancerType="INTERNAL", VpcId=network["VpcId"], SubnetId=network["SubnetId"]
    )
    poll(lambda: tccli("clb", "DescribeTaskStatus", DealName=created["DealName"])["Status"], lambda s: s == 0)
    (lb_id,) = created["LoadBalancerIds"]
    listener = tccli("clb", "CreateListener", LoadBalancerId=lb_id, Ports=[80], Protocol="TCP")
    poll(lambda: tccli("clb", "DescribeTaskStatus", TaskId=listener["RequestId"])["Status"], lambda s: s == 0)
    targets = [{"InstanceId": i, "Port": 80} for i in [source, *ids]]
    registered = tccli(
        "clb", "RegisterTargets", LoadBalancerId=lb_id, ListenerId=listener["ListenerIds"][0], Targets=targets
    )
    poll(lambda: tccli("clb", "DescribeTaskStatus", TaskId=registered["RequestId"])["Status"], lambda s: s == 0)

    vip = tccli("clb", "DescribeLoadBalancers", LoadBalancerIds=[lb_id])["LoadBalancerSet"][0]["LoadBalancerVips"][0]
    group = instance["SecurityGroupIds"][0]
    rule = {"Ingress": [{"Protocol": "TCP", "Port": "80", "CidrBlock": f"{vip}/32", "Action": "ACCEPT"}]}
    tccli("vpc", "CreateSecurityGroupPolicies", SecurityGroupId=group, SecurityGroupPolicySet=rule)
    policies = tccli("vpc", "DescribeSecurityGroupPolicies", SecurityGroupId=group)["SecurityGroupPolicySet"]
    assert any(p.get("CidrBlock") == f"{vip}/32" for p in policies["Ingress"])


def test_tccli_autoscaling_with_the_examples_lenient_inputs(tccli):
    """tccli's folder is `autoscaling` (signing service `as`); Tencent's examples send `"tcp"` and numeric strings."""
    subnet = next(s for s in tccli("vpc", "DescribeSubnets")["SubnetSet"] if s["IsDefault"])
    created = tccli(
        "clb", "CreateLoadBalancer", LoadBalancerType="INTERNAL", VpcId=subnet["VpcId"], SubnetId=subnet["SubnetId"]
    )
    poll(lambda: tccli("clb", "DescribeTaskStatus", DealName=created["DealName"])["Status"], lambda s: s == 0)
    (lb_id,) = created["LoadBalancerIds"]
    listener = tccli("clb", "CreateListener", LoadBalancerId=lb_id, Ports=["80"], Protocol="tcp")
    poll(lambda: tccli("clb", "DescribeTaskStatus", TaskId=listener["RequestId"])["Status"], lambda s: s == 0)
    lc = tccli(
        "autoscaling",
        "CreateLaunchConfiguration",
        LaunchConfigurationName="cli-lc",
        ImageId="img-l8og963d",
        InstanceType="S5.MEDIUM2",
    )
    forward = [
        {
            "LoadBalancerId": lb_id,
            "ListenerId": listener["ListenerIds"][0],
            "TargetAttributes": [{"Port": "80", "Weight": "10"}],
        }
    ]
    group = tccli(
        "autoscaling",
        "CreateAutoScalingGroup",
        AutoScalingGroupName="cli-asg",
        LaunchConfigurationId=lc["LaunchConfigurationId"],
        MinSize="0",
        MaxSize="3",
        DesiredCapacity="1",
        VpcId=subnet["VpcId"],
        SubnetIds=[subnet["SubnetId"]],
        ForwardLoadBalancers=forward,
    )
    group_id = group["AutoScalingGroupId"]
    describe = lambda: tccli("autoscaling", "DescribeAutoScalingGroups", AutoScalingGroupIds=[group_id])  # noqa: E731
    poll(lambda: describe()["AutoScalingGroupSet"][0]["InServiceInstanceCount"], lambda n: n == 1)
