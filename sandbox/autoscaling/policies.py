"""Scaling policies: SIMPLE (an alarm on a metric changes the desired capacity) and TARGET_TRACKING.

Alarms read `sandbox.core.metrics` (per-server samples derived from the requests the apps serve, or
pinned through `POST /_sandbox/metrics`). A SIMPLE policy's alarm is evaluated at the end of every
Period of sandbox time: the Statistic over the period, per server in service, then across the group
(AVERAGE of averages, MAXIMUM of maxima, MINIMUM of minima); after ContinuousTime consecutive breaching
periods the policy fires, unless the group is in activity or in its cooldown (it fires at the first
evaluation after that, if the alarm still holds), then the group stays in cooldown for the policy's
Cooldown. TARGET_TRACKING evaluates every minute: 3 consecutive minutes above TargetValue scale out to
ceil(n x value / target); 15 consecutive minutes below 80 % of it scale in (unless DisableScaleIn);
EstimatedInstanceWarmup is the cooldown after a scale-out. A clock jump evaluates at most the last
MAX_CATCH_UP periods.
"""

import math
from typing import TYPE_CHECKING, Any

from sandbox.autoscaling.activities import user_cause
from sandbox.autoscaling.common import check_id, check_name, cvm_of, in_range, one_of
from sandbox.autoscaling.models import Activity, AsState, AutoScalingGroup, MetricAlarm, ScalingPolicy
from sandbox.core.catalog import INSTANCE_TYPES
from sandbox.core.errors import ApiError
from sandbox.core.ids import new_id
from sandbox.core.metrics import METRICS

if TYPE_CHECKING:
    from sandbox.core.emulated_cloud import Cloud

ADJUSTMENTS = ("CHANGE_IN_CAPACITY", "EXACT_CAPACITY", "PERCENT_CHANGE_IN_CAPACITY")
OPERATORS = {
    "GREATER_THAN": lambda v, t: v > t,
    "GREATER_THAN_OR_EQUAL_TO": lambda v, t: v >= t,
    "LESS_THAN": lambda v, t: v < t,
    "LESS_THAN_OR_EQUAL_TO": lambda v, t: v <= t,
    "EQUAL_TO": lambda v, t: v == t,
    "NOT_EQUAL_TO": lambda v, t: v != t,
}
STATISTICS = {"AVERAGE": lambda xs: sum(xs) / len(xs), "MAXIMUM": max, "MINIMUM": min}
PREDEFINED = {
    "ASG_AVG_CPU_UTILIZATION": "CPU_UTILIZATION",
    "ASG_AVG_LAN_TRAFFIC_OUT": "LAN_TRAFFIC_OUT",
    "ASG_AVG_LAN_TRAFFIC_IN": "LAN_TRAFFIC_IN",
    "ASG_AVG_WAN_TRAFFIC_OUT": "WAN_TRAFFIC_OUT",
    "ASG_AVG_WAN_TRAFFIC_IN": "WAN_TRAFFIC_IN",
}
TRACKING_OUT_MINUTES, TRACKING_IN_MINUTES, TRACKING_IN_RATIO = 3, 15, 0.8
MAX_CATCH_UP = 30
PERCENT_METRICS = ("CPU_UTILIZATION", "MEM_UTILIZATION")


class PolicyRules:
    state: AsState
    cloud: "Cloud"

    if TYPE_CHECKING:

        def group(self, region: str, group_id: str) -> AutoScalingGroup: ...
        def in_activity(self, group: AutoScalingGroup) -> bool: ...
        def check_idle(self, group: AutoScalingGroup, code: str = ...) -> None: ...
        def check_enabled(self, group: AutoScalingGroup) -> None: ...
        def open_reconciliation(self, group: AutoScalingGroup, cause: str) -> Activity | None: ...

    def policy(self, region: str, policy_id: str) -> ScalingPolicy:
        check_id("asp", policy_id)
        policy = self.state.policies.get(policy_id)
        if policy is None or policy.region != region:
            raise ApiError(
                "ResourceNotFound.ScalingPolicyNotFound", f"The scaling policy `{policy_id}` does not exist."
            )
        return policy

    def policies(self, region: str) -> list[ScalingPolicy]:
        return [p for p in self.state.policies.values() if p.region == region]

    def create_policy(self, region: str, p: dict[str, Any]) -> ScalingPolicy:
        group = self.group(region, p["AutoScalingGroupId"])
        now = self.cloud.clock.now()
        policy = ScalingPolicy(
            policy_id=new_id("asp"),
            region=region,
            group_id=group.group_id,
            name="",
            policy_type=p.get("ScalingPolicyType", "SIMPLE"),
            created_at=now,
            evaluated_until=now,
        )
        one_of("ScalingPolicyType", policy.policy_type, ("SIMPLE", "TARGET_TRACKING"))
        self._update_policy(policy, p)
        self.state.policies[policy.policy_id] = policy
        return policy

    def modify_policy(self, region: str, p: dict[str, Any]) -> ScalingPolicy:
        policy = self.policy(region, p["AutoScalingPolicyId"])
        draft = policy.model_copy(deep=True)
        self._update_policy(draft, p)
        draft.breaches = draft.lows = 0
        self.state.policies[policy.policy_id] = draft
        return draft

    def delete_policy(self, region: str, policy_id: str) -> None:
        del self.state.policies[self.policy(region, policy_id).policy_id]

    def _update_policy(self, policy: ScalingPolicy, p: dict[str, Any]) -> None:
        if "ScalingPolicyName" in p:
            name = check_name("ScalingPolicyName", p["ScalingPolicyName"], 60)
            if any(
                o.name == name and o.region == policy.region and o.policy_id != policy.policy_id
                for o in self.state.policies.values()
            ):
                raise ApiError(
                    "InvalidParameterValue.ScalingPolicyNameDuplicate",
                    f"A scaling policy named `{name}` already exists.",
                )
            policy.name = name
        simple = ("AdjustmentType", "AdjustmentValue", "MetricAlarm", "Cooldown")
        tracking = ("PredefinedMetricType", "TargetValue", "EstimatedInstanceWarmup", "DisableScaleIn")
        wrong = [m for m in (tracking if policy.policy_type == "SIMPLE" else simple) if m in p]
        if wrong:
            raise ApiError(
                "InvalidParameter.InScenario", f"{', '.join(wrong)} do not apply to a {policy.policy_type} policy."
            )
        if "NotificationUserGroupIds" in p:
            policy.notification_user_group_ids = list(p["NotificationUserGroupIds"])
        if policy.policy_type == "SIMPLE":
            self._simple(policy, p)
        else:
            self._tracking(policy, p)

    def _simple(self, policy: ScalingPolicy, p: dict[str, Any]) -> None:
        current = {
            "AdjustmentType": policy.adjustment_type,
            "AdjustmentValue": policy.adjustment_value,
            "MetricAlarm": policy.metric_alarm,
        }
        for member, value in current.items():
            if member not in p and value is None:
                raise ApiError("MissingParameter.InScenario", f"A SIMPLE policy needs `{member}`.")
        policy.adjustment_type = one_of("AdjustmentType", p.get("AdjustmentType", policy.adjustment_type), ADJUSTMENTS)
        value = p.get("AdjustmentValue", policy.adjustment_value)
        if policy.adjustment_type == "EXACT_CAPACITY" and value < 0:
            raise ApiError("InvalidParameterValue", "An EXACT_CAPACITY AdjustmentValue must not be negative.")
        if policy.adjustment_type != "EXACT_CAPACITY" and value == 0:
            raise ApiError("InvalidParameterValue", "A CHANGE / PERCENT AdjustmentValue must not be 0.")
        policy.adjustment_value = value
        cooldown = p.get("Cooldown", 300 if policy.cooldown is None else policy.cooldown)
        policy.cooldown = in_range("Cooldown", cooldown, 0, 3600)
        if "MetricAlarm" in p:
            a = p["MetricAlarm"]
            alarm = MetricAlarm(
                comparison_operator=one_of("MetricAlarm.ComparisonOperator", a["ComparisonOperator"], tuple(OPERATORS)),
                metric_name=one_of("MetricAlarm.MetricName", a["MetricName"], METRICS),
                threshold=a["Threshold"],
                period=a["Period"],
                continuous_time=in_range("MetricAlarm.ContinuousTime", a["ContinuousTime"], 1, 10),
                statistic=one_of("MetricAlarm.Statistic", a.get("Statistic", "AVERAGE"), tuple(STATISTICS)),
                precise_threshold=a.get("PreciseThreshold"),
            )
            one_of("MetricAlarm.Period", str(alarm.period), ("60", "300"))
            if alarm.metric_name in PERCENT_METRICS and not 1 <= alarm.threshold <= 100:
                raise ApiError(
                    "InvalidParameterValue.ThresholdOutOfRange",
                    f"The threshold of {alarm.metric_name} must be between 1 and 100.",
                )
            policy.metric_alarm = alarm

    def _tracking(self, policy: ScalingPolicy, p: dict[str, Any]) -> None:
        metric = p.get("PredefinedMetricType", policy.predefined_metric_type)
        target = p.get("TargetValue", policy.target_value)
        if metric is None or target is None:
            raise ApiError(
                "MissingParameter.InScenario", "A TARGET_TRACKING policy needs PredefinedMetricType and TargetValue."
            )
        policy.predefined_metric_type = one_of("PredefinedMetricType", metric, tuple(PREDEFINED))
        if PREDEFINED[metric] in PERCENT_METRICS and not 1 <= target <= 100:
            raise ApiError("InvalidParameterValue.Range", "TargetValue of a CPU policy must be between 1 and 100.")
        if target <= 0:
            raise ApiError("InvalidParameterValue.Range", "TargetValue must be positive.")
        same = [
            o
            for o in self.state.policies.values()
            if o.group_id == policy.group_id
            and o.policy_id != policy.policy_id
            and o.policy_type == "TARGET_TRACKING"
            and o.predefined_metric_type == metric
        ]
        if same:
            raise ApiError(
                "LimitExceeded.TargetTrackingScalingPolicy", f"The group already tracks {metric} ({same[0].policy_id})."
            )
        policy.target_value = target
        warmup = p.get("EstimatedInstanceWarmup", policy.estimated_instance_warmup)
        policy.estimated_instance_warmup = in_range(
            "EstimatedInstanceWarmup", 300 if warmup is None else warmup, 0, 3600
        )
        policy.disable_scale_in = bool(p.get("DisableScaleIn", policy.disable_scale_in or False))

    # ---- execution ---------------------------------------------------------------------------------
    def execute_policy(self, region: str, policy_id: str, honor_cooldown: bool) -> Activity:
        policy = self.policy(region, policy_id)
        if policy.policy_type == "TARGET_TRACKING":
            raise ApiError(
                "InvalidParameterValue.TargetTrackingScalingPolicy",
                "A target tracking policy cannot be executed by hand.",
            )
        group = self.state.groups[policy.group_id]
        self.check_enabled(group)
        self.check_idle(group)
        if honor_cooldown and self.cloud.clock.now() < group.cooldown_until:
            raise ApiError("FailedOperation.NoActivityToGenerate", f"The group `{group.group_id}` is in its cooldown.")
        cause = user_cause("ExecuteScalingPolicy", f"{policy.name}, {policy.policy_id}")
        activity = self._adjust(group, self._target(policy, group), cause, policy.cooldown or 0)
        if activity is None:
            raise ApiError("FailedOperation.NoActivityToGenerate", "The policy leaves the desired capacity as it is.")
        return activity

    def _target(self, policy: ScalingPolicy, group: AutoScalingGroup) -> int:
        current, value = group.desired, policy.adjustment_value or 0
        if policy.adjustment_type == "EXACT_CAPACITY":
            return value
        if policy.adjustment_type == "PERCENT_CHANGE_IN_CAPACITY":
            change = current * value / 100
            step = math.ceil(abs(change)) or 1
            return current + (step if value > 0 else -step)
        return current + value

    def _adjust(self, group: AutoScalingGroup, desired: int, cause: str, cooldown: int) -> Activity | None:
        desired = min(max(desired, group.min_size), group.max_size)
        if desired == group.desired:
            return None
        group.desired = desired
        group.retry_blocked, group.failures, group.retry_at = False, 0, None
        group.cooldown_until = self.cloud.clock.now() + cooldown
        return self.open_reconciliation(group, cause)

    # ---- alarms ------------------------------------------------------------------------------------
    def evaluate_policies(self, now: float) -> float | None:
        upcoming: float | None = None
        for policy in list(self.state.policies.values()):
            group = self.state.groups.get(policy.group_id)
            if group is None:
                continue
            period = policy.metric_alarm.period if policy.metric_alarm else 60
            start = max(policy.evaluated_until, now - MAX_CATCH_UP * period)
            while start + period <= now:
                self._evaluate(policy, group, start, start + period)
                start += period
            policy.evaluated_until = start
            upcoming = start + period if upcoming is None else min(upcoming, start + period)
        return upcoming

    def group_metric(
        self, group: AutoScalingGroup, metric: str, start: float, end: float, statistic: str
    ) -> float | None:
        cvm = cvm_of(self.cloud)
        per_server = []
        for member in group.instances.values():
            if member.life_cycle_state != "IN_SERVICE":
                continue
            instance = cvm.state.instances.get(member.instance_id)
            cores = (
                INSTANCE_TYPES[instance.instance_type].cpu
                if instance and instance.instance_type in INSTANCE_TYPES
                else 1
            )
            samples = self.cloud.metrics.window(member.instance_id, metric, start, end, cores)
            if samples:
                per_server.append(STATISTICS[statistic](samples))
        return STATISTICS[statistic](per_server) if per_server else None

    def _evaluate(self, policy: ScalingPolicy, group: AutoScalingGroup, start: float, end: float) -> None:
        if policy.policy_type == "TARGET_TRACKING":
            self._evaluate_tracking(policy, group, start, end)
            return
        alarm = policy.metric_alarm
        assert alarm is not None
        value = self.group_metric(group, alarm.metric_name, start, end, alarm.statistic)
        threshold = alarm.precise_threshold if alarm.precise_threshold is not None else alarm.threshold
        if value is None or not OPERATORS[alarm.comparison_operator](value, threshold):
            policy.breaches = 0
            return
        policy.breaches += 1
        if policy.breaches < alarm.continuous_time or not self._may_fire(group, end):
            return
        cause = (
            f"Activity was launched in response to the alarm of the scaling policy {policy.name} ({policy.policy_id}): "
            f"{alarm.metric_name} {alarm.statistic.lower()} {value:.1f} {alarm.comparison_operator} {threshold} "
            f"for {policy.breaches} period(s) of {alarm.period} s."
        )
        self._adjust(group, self._target(policy, group), cause, policy.cooldown or 0)
        policy.breaches = 0

    def _evaluate_tracking(self, policy: ScalingPolicy, group: AutoScalingGroup, start: float, end: float) -> None:
        metric = PREDEFINED[policy.predefined_metric_type or ""]
        target = float(policy.target_value or 1)
        value = self.group_metric(group, metric, start, end, "AVERAGE")
        if value is None:
            policy.breaches = policy.lows = 0
            return
        policy.breaches = policy.breaches + 1 if value > target else 0
        policy.lows = policy.lows + 1 if value < target * TRACKING_IN_RATIO else 0
        current = len([m for m in group.instances.values() if m.life_cycle_state == "IN_SERVICE"]) or group.desired
        wanted = math.ceil(current * value / target)
        cause = (
            f"Activity was launched in response to the target tracking policy {policy.name} ({policy.policy_id}): "
            f"{metric} average {value:.1f}, target {policy.target_value}."
        )
        if policy.breaches >= TRACKING_OUT_MINUTES and self._may_fire(group, end):
            self._adjust(group, max(wanted, group.desired + 1), cause, policy.estimated_instance_warmup or 0)
            policy.breaches = 0
        elif policy.lows >= TRACKING_IN_MINUTES and not policy.disable_scale_in and self._may_fire(group, end):
            self._adjust(group, min(wanted, group.desired - 1), cause, 0)
            policy.lows = 0

    def _may_fire(self, group: AutoScalingGroup, at: float) -> bool:
        return group.enabled and at >= group.cooldown_until and not self.in_activity(group)
