"""Bench (issue 8): the sandbox's Auto Scaling engine, through the real SDK.

1. Scale-out latency, realistic profile at time scale S: ModifyDesiredCapacity(+10) on a scaling group (launch
   configuration from an image of the seeded business server, ForwardLoadBalancers on a TCP listener of a CLB)
   until the 10 new servers are IN_SERVICE (DescribeAutoScalingInstances) and healthy behind the CLB
   (DescribeTargetHealth). Compared with the profile's own time for one server: `instance.launch * S` plus one
   CLB task (`clb.task * S`, the registration). Target: ratio <= 1.2. Also against launch + the health check's rise
   (`HealthNum * IntervalTime * S` of the listener): a target registered while its app still starts fails its first
   probe, as on the real cloud, and the CLB then wants HealthNum successes IntervalTime apart.
2. Memory: the sandbox process's RSS (VmRSS, VmHWM of /proc/<pid>/status) idle after the seed, and with 100 group
   members IN_SERVICE and healthy (desired 100, instant profile).

The sandbox runs in its own process (ssh port 3222, port 80 served at 9281: `--ssh-port`, `--app-port`),
on its own 127.79/16 network, with the real API's throttling (20 requests/s per action).

    uv run python -m bench.autoscaling [--scale 1.0] [--rounds 2] [--members 100]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from tencentcloud.autoscaling.v20180419 import autoscaling_client
from tencentcloud.clb.v20180317 import clb_client
from tencentcloud.cvm.v20170312 import cvm_client

from bench.common import SandboxProcess, add_port_options, memory_mb, print_table, sdk_client, write_results
from sandbox.core.clock import REALISTIC_SECONDS

SEED_NETWORK = {"vpc_cidr": "127.79.0.0/16", "subnet_cidr": "127.79.3.0/24"}  # clear of tests and other benches
TARGET_RATIO = 1.2
STEP = 10
POLL_SECONDS = 0.1  # the bench's own polls: fine against waits of seconds, well under 20 requests/s per action


def call(client: Any, action: str, params: dict[str, Any]) -> dict[str, Any]:
    return client.call_json(action, params)["Response"]


def wait_for(check: Any, what: str, timeout: float = 300.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(POLL_SECONDS)
    return result


def load() -> str:
    """The 1, 5 and 15 minute load averages (the machine is shared)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Bench:
    def __init__(self, sandbox: SandboxProcess) -> None:
        self.sandbox = sandbox
        self.autoscaling = sdk_client(autoscaling_client.AutoscalingClient, sandbox.endpoint)
        self.cvm = sdk_client(cvm_client.CvmClient, sandbox.endpoint)
        self.clb = sdk_client(clb_client.ClbClient, sandbox.endpoint)

    def a(self, action: str, **params: Any) -> dict[str, Any]:
        return call(self.autoscaling, action, params)

    def clb_done(self, **task: str) -> bool:
        return call(self.clb, "DescribeTaskStatus", task)["Status"] == 0

    def build(self, seed: dict[str, Any]) -> None:
        """Image, CLB with a TCP listener on the business port, launch configuration, group (desired 0)."""
        image_id = call(
            self.cvm, "CreateImage", {"InstanceId": seed["business_server"]["instance_id"], "ImageName": "business"}
        )["ImageId"]
        image_state = lambda: call(self.cvm, "DescribeImages", {"ImageIds": [image_id]})["ImageSet"][0]["ImageState"]  # noqa: E731
        wait_for(lambda: image_state() == "NORMAL", "the image")
        self.port = seed["ports"]["business"]
        network = {"VpcId": seed["vpc"]["vpc_id"], "SubnetId": seed["subnet"]["subnet_id"]}
        lb = call(
            self.clb, "CreateLoadBalancer", {"LoadBalancerType": "INTERNAL", "ProjectId": seed["project_id"], **network}
        )
        wait_for(lambda: self.clb_done(DealName=lb["DealName"]), "the CLB")
        self.lb_id = lb["LoadBalancerIds"][0]
        listener = call(
            self.clb, "CreateListener", {"LoadBalancerId": self.lb_id, "Ports": [self.port], "Protocol": "TCP"}
        )
        wait_for(lambda: self.clb_done(TaskId=listener["RequestId"]), "the listener")
        self.listener_id = listener["ListenerIds"][0]
        described = call(
            self.clb, "DescribeListeners", {"LoadBalancerId": self.lb_id, "ListenerIds": [self.listener_id]}
        )
        check = described["Listeners"][0]["HealthCheck"]
        self.health_rise = check["HealthNum"] * check["IntervalTime"]  # seconds of successes a Dead target needs
        lc_id = self.a(
            "CreateLaunchConfiguration",
            LaunchConfigurationName="business",
            ImageId=image_id,
            InstanceType="S5.SMALL1",
            ProjectId=seed["project_id"],
            SecurityGroupIds=[seed["security_groups"]["business"]],
            LoginSettings={"KeyIds": [seed["key_pair"]["key_id"]]},
        )["LaunchConfigurationId"]
        forward = {"LoadBalancerId": self.lb_id, "ListenerId": self.listener_id}
        self.group_id = self.a(
            "CreateAutoScalingGroup",
            AutoScalingGroupName="business",
            LaunchConfigurationId=lc_id,
            MinSize=0,
            MaxSize=200,
            DesiredCapacity=0,
            VpcId=seed["vpc"]["vpc_id"],
            ProjectId=seed["project_id"],
            SubnetIds=[seed["subnet"]["subnet_id"]],
            ForwardLoadBalancers=[{**forward, "TargetAttributes": [{"Port": self.port, "Weight": 10}]}],
        )["AutoScalingGroupId"]

    def members(self) -> dict[str, str]:
        """Group member -> LifeCycleState, every page."""
        found: dict[str, str] = {}
        filters = [{"Name": "auto-scaling-group-id", "Values": [self.group_id]}]
        while True:
            page = self.a("DescribeAutoScalingInstances", Filters=filters, Limit=100, Offset=len(found))
            found |= {i["InstanceId"]: i["LifeCycleState"] for i in page["AutoScalingInstanceSet"]}
            if not page["AutoScalingInstanceSet"] or len(found) >= page["TotalCount"]:
                return found

    def target_health(self) -> dict[str, str]:
        """Each target of the listener -> HealthStatusDetail (Alive, Dead, Unknown: not probed yet)."""
        answer = call(self.clb, "DescribeTargetHealth", {"LoadBalancerIds": [self.lb_id]})["LoadBalancers"]
        return {
            t["TargetId"]: t["HealthStatusDetail"]
            for lb in answer
            for li in lb["Listeners"] or []
            for rule in li["Rules"] or []
            for t in rule["Targets"] or []
        }

    def scale_to(self, desired: int, timeout: float = 600.0) -> dict[str, Any]:
        """ModifyDesiredCapacity, then the seconds until the new members are IN_SERVICE, all registered as targets,
        and all healthy; and each new target's first health verdict (Dead first: the health check's rise)."""
        before = set(self.members())
        began = time.perf_counter()
        self.a("ModifyDesiredCapacity", AutoScalingGroupId=self.group_id, DesiredCapacity=desired)
        marks: dict[str, float] = {}
        new: set[str] = set()
        first: dict[str, str] = {}

        def done() -> bool:
            nonlocal new
            if "in_service_s" not in marks:
                members = self.members()
                new = set(members) - before
                if len(members) == desired and all(state == "IN_SERVICE" for state in members.values()):
                    marks["in_service_s"] = time.perf_counter() - began
            health = self.target_health()
            for target, detail in health.items():
                if target not in before and detail != "Unknown":
                    first.setdefault(target, detail)
            if new and new <= set(health) and "registered_s" not in marks:
                marks["registered_s"] = time.perf_counter() - began
            return "in_service_s" in marks and all(health.get(i) == "Alive" for i in new)

        wait_for(done, f"{desired} members in service and healthy", timeout)
        verdicts = {v: sum(1 for i in new if first.get(i) == v) for v in ("Alive", "Dead")}
        return {
            "desired": desired,
            "new": len(new),
            "registered_s": marks.get("registered_s"),
            "in_service_s": marks["in_service_s"],
            "healthy_s": time.perf_counter() - began,
            "first_verdict": f"Alive x{verdicts['Alive']}, Dead x{verdicts['Dead']}",
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="time scale S of the realistic profile")
    parser.add_argument("--rounds", type=int, default=2, help="scale-outs of +10 on the realistic profile")
    parser.add_argument("--members", type=int, default=100, help="group size for the memory measure")
    parser.add_argument("--rate-limit", type=int, default=20, help="the sandbox's requests/s per action")
    add_port_options(parser)
    args = parser.parse_args()
    scale = args.scale
    expected = (REALISTIC_SECONDS["instance.launch"] + REALISTIC_SECONDS["clb.task"]) * scale
    launch = REALISTIC_SECONDS["instance.launch"] * scale
    load_before = load()

    with SandboxProcess(rate_limit=args.rate_limit, ssh_port=args.ssh_port, app_port=args.app_port) as sandbox:
        sandbox.admin("POST", "clock", {"profile": "instant", "time_scale": 1.0})
        seed = sandbox.admin("POST", "seed", SEED_NETWORK)
        bench = Bench(sandbox)
        bench.build(seed)
        rss_idle, _ = memory_mb(sandbox.pid)
        warm = bench.scale_to(1)  # warm-up: the first guest boots from the image, paths load
        sandbox.admin("POST", "clock", {"profile": "realistic", "time_scale": scale})
        rounds = [bench.scale_to(warm["desired"] + STEP * (r + 1)) for r in range(args.rounds)]
        sandbox.admin("POST", "clock", {"profile": "instant", "time_scale": 1.0})
        _, peak_before = memory_mb(sandbox.pid)
        big = bench.scale_to(args.members)
        rss, peak = memory_mb(sandbox.pid)
    load_after = load()

    # A target registered while its app still starts is Dead at the first probe (as a real one is), and the CLB then
    # wants HealthNum successes IntervalTime apart: the cloud's own time to healthy is launch + that rise.
    with_rise = launch + bench.health_rise * scale
    for r in rounds:
        r["expected_s"], r["expected_with_rise_s"] = expected, with_rise
        r["ratio"] = r["healthy_s"] / expected
        r["in_service_ratio"] = r["in_service_s"] / expected
        r["ratio_with_rise"] = r["healthy_s"] / with_rise
    print_table(
        f"ModifyDesiredCapacity(+{STEP}), realistic profile S={scale:g} "
        f"(one server: instance.launch + clb.task = {expected:g} s)",
        [
            {
                "desired": r["desired"],
                "new": r["new"],
                "registered_s": r["registered_s"],
                "in_service_s": r["in_service_s"],
                "healthy_s": r["healthy_s"],
                "one_server_s": expected,
                "in_service/one_server": r["in_service_ratio"],
                "healthy/one_server": r["ratio"],
                "with_rise_s": with_rise,
                "healthy/with_rise": r["ratio_with_rise"],
                "first_health_verdict": r["first_verdict"],
            }
            for r in rounds
        ],
    )
    print_table(
        "sandbox memory (MB)",
        [
            {"what": "after the seed and the group's setup", "rss": rss_idle},
            {"what": f"peak before the {args.members}-member scale-out", "vmhwm": peak_before},
            {
                "what": f"{args.members} group members IN_SERVICE and healthy",
                "rss": rss,
                "vmhwm": peak,
                "per_member": (rss - rss_idle) / args.members,
                "s": big["healthy_s"],
            },
        ],
    )
    ratio = max(r["ratio"] for r in rounds)
    print(f"\nload average before {load_before}, after {load_after} ({os.cpu_count()} cpus)")
    write_results(
        "autoscaling",
        {
            "time_scale": scale,
            "one_server_s": expected,
            "warmup": warm,
            "rounds": rounds,
            "ratio": ratio,
            "target_ratio": TARGET_RATIO,
            "ratio_met": ratio <= TARGET_RATIO,
            "one_server_with_health_rise_s": with_rise,
            "ratio_with_health_rise": max(r["ratio_with_rise"] for r in rounds),
            "in_service_ratio": max(r["in_service_ratio"] for r in rounds),
            "memory": {"idle_rss_mb": rss_idle, "members": args.members, "rss_mb": rss, "vmhwm_mb": peak},
            "members_run": big,
            "load": {"before": load_before, "after": load_after},
        },
    )
    print(
        f"healthy/one_server (worst round): {ratio:.3f} (target <= {TARGET_RATIO}); in_service/one_server "
        f"{max(r['in_service_ratio'] for r in rounds):.3f}; healthy/(launch + health-check rise) "
        f"{max(r['ratio_with_rise'] for r in rounds):.3f}; RSS at {args.members}: {rss:.0f} MB"
    )


if __name__ == "__main__":
    main()
