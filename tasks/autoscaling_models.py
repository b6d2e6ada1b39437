"""The Auto Scaling objects the flows handle, parsed from the API's answers (as 2018-04-19 field names)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

FINISHED_OK = "SUCCESSFUL"
FAILED_STATES = ("FAILED", "PARTIALLY_SUCCESSFUL", "CANCELLED")


class LaunchConfiguration(BaseModel):
    launch_configuration_id: str
    name: str
    image_id: str
    instance_type: str
    status: str = "NORMAL"
    project_id: int = 0
    security_group_ids: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> LaunchConfiguration:
        return cls(
            launch_configuration_id=item["LaunchConfigurationId"],
            name=item["LaunchConfigurationName"],
            image_id=item.get("ImageId") or "",
            instance_type=item.get("InstanceType") or "",
            status=item.get("LaunchConfigurationStatus") or "NORMAL",
            project_id=int(item.get("ProjectId") or 0),
            security_group_ids=item.get("SecurityGroupIds") or [],
            tags={t["Key"]: t["Value"] for t in item.get("Tags") or []},
        )

    def carries(self, tags: dict[str, str]) -> bool:
        return all(self.tags.get(k) == v for k, v in tags.items())


class ForwardLoadBalancer(BaseModel):
    load_balancer_id: str
    listener_id: str
    port: int
    weight: int = 10

    def api(self) -> dict[str, Any]:
        return {
            "LoadBalancerId": self.load_balancer_id,
            "ListenerId": self.listener_id,
            "TargetAttributes": [{"Port": self.port, "Weight": self.weight}],
        }


class Group(BaseModel):
    group_id: str
    name: str
    launch_configuration_id: str
    min_size: int
    max_size: int
    desired: int
    vpc_id: str
    subnet_ids: list[str] = Field(default_factory=list)
    zones: list[str] = Field(default_factory=list)
    termination_policies: list[str] = Field(default_factory=list)
    forward: list[ForwardLoadBalancer] = Field(default_factory=list)
    instance_count: int = 0
    in_service: int = 0
    in_activity: bool = False
    enabled: bool = True
    created_time: str = ""
    tags: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> Group:
        forward = []
        for f in item.get("ForwardLoadBalancerSet") or []:
            for attr in f.get("TargetAttributes") or [{}]:
                forward.append(
                    ForwardLoadBalancer(
                        load_balancer_id=f["LoadBalancerId"],
                        listener_id=f.get("ListenerId") or "",
                        port=int(attr.get("Port") or 0),
                        weight=int(attr.get("Weight") or 0),
                    )
                )
        return cls(
            group_id=item["AutoScalingGroupId"],
            name=item["AutoScalingGroupName"],
            launch_configuration_id=item["LaunchConfigurationId"],
            min_size=item["MinSize"],
            max_size=item["MaxSize"],
            desired=item["DesiredCapacity"],
            vpc_id=item.get("VpcId") or "",
            subnet_ids=item.get("SubnetIdSet") or [],
            zones=item.get("ZoneSet") or [],
            termination_policies=item.get("TerminationPolicySet") or [],
            forward=forward,
            instance_count=int(item.get("InstanceCount") or 0),
            in_service=int(item.get("InServiceInstanceCount") or 0),
            in_activity=item.get("InActivityStatus") == "IN_ACTIVITY",
            enabled=item.get("EnabledStatus", "ENABLED") == "ENABLED",
            created_time=item.get("CreatedTime") or "",
            tags={t["Key"]: t["Value"] for t in item.get("Tags") or []},
        )

    def carries(self, tags: dict[str, str]) -> bool:
        return all(self.tags.get(k) == v for k, v in tags.items())

    @property
    def settled(self) -> bool:
        return not self.in_activity and self.instance_count == self.in_service == self.desired


class Member(BaseModel):
    instance_id: str
    group_id: str
    state: str
    health: str = "HEALTHY"
    creation_type: str = "AUTO_CREATION"
    protected: bool = False
    zone: str = ""
    add_time: str = ""

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> Member:
        return cls(
            instance_id=item["InstanceId"],
            group_id=item["AutoScalingGroupId"],
            state=item["LifeCycleState"],
            health=item.get("HealthStatus") or "",
            creation_type=item.get("CreationType") or "",
            protected=bool(item.get("ProtectedFromScaleIn")),
            zone=item.get("Zone") or "",
            add_time=item.get("AddTime") or "",
        )


class Activity(BaseModel):
    activity_id: str
    type: str
    status: str
    cause: str = ""
    description: str = ""
    message: str = ""
    start_time: str = ""
    end_time: str = ""
    instances: dict[str, str] = Field(default_factory=dict, description="{instance id: its status in the activity}")

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> Activity:
        return cls(
            activity_id=item["ActivityId"],
            type=item.get("ActivityType") or "",
            status=item["StatusCode"],
            cause=item.get("Cause") or "",
            description=item.get("Description") or "",
            message=item.get("StatusMessage") or item.get("StatusMessageSimplified") or "",
            start_time=item.get("StartTime") or "",
            end_time=item.get("EndTime") or "",
            instances={i["InstanceId"]: i.get("InstanceStatus") or "" for i in item.get("RelatedInstanceSet") or []},
        )

    def failure(self) -> str | None:
        if self.status not in FAILED_STATES:
            return None
        return f"activity {self.activity_id} ({self.type}) {self.status}: {self.message or self.cause}"


class ScheduledAction(BaseModel):
    action_id: str = ""
    name: str
    min_size: int
    max_size: int
    desired: int
    start_time: str
    end_time: str = ""
    recurrence: str = ""

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> ScheduledAction:
        return cls(
            action_id=item["ScheduledActionId"],
            name=item["ScheduledActionName"],
            min_size=item["MinSize"],
            max_size=item["MaxSize"],
            desired=item["DesiredCapacity"],
            start_time=item.get("StartTime") or "",
            end_time=item.get("EndTime") or "",
            recurrence=item.get("Recurrence") or "",
        )


class AlarmPolicy(BaseModel):
    policy_id: str = ""
    name: str
    adjustment: int
    operator: str
    threshold: int
    period: int
    continuous_time: int
    cooldown: int
    metric: str = "CPU_UTILIZATION"
    statistic: str = "AVERAGE"

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> AlarmPolicy:
        alarm = item.get("MetricAlarm") or {}
        return cls(
            policy_id=item["AutoScalingPolicyId"],
            name=item["ScalingPolicyName"],
            adjustment=int(item.get("AdjustmentValue") or 0),
            operator=alarm.get("ComparisonOperator") or "",
            threshold=int(alarm.get("Threshold") or 0),
            period=int(alarm.get("Period") or 0),
            continuous_time=int(alarm.get("ContinuousTime") or 0),
            cooldown=int(item.get("Cooldown") or 0),
            metric=alarm.get("MetricName") or "",
            statistic=alarm.get("Statistic") or "AVERAGE",
        )

    def same_as(self, other: AlarmPolicy) -> bool:
        keys = {"adjustment", "operator", "threshold", "period", "continuous_time", "cooldown", "metric", "statistic"}
        return self.model_dump(include=keys) == other.model_dump(include=keys)

    def api(self) -> dict[str, Any]:
        return {
            "AdjustmentType": "CHANGE_IN_CAPACITY",
            "AdjustmentValue": self.adjustment,
            "Cooldown": self.cooldown,
            "MetricAlarm": {
                "ComparisonOperator": self.operator,
                "MetricName": self.metric,
                "Threshold": self.threshold,
                "Period": self.period,
                "ContinuousTime": self.continuous_time,
                "Statistic": self.statistic,
            },
        }
