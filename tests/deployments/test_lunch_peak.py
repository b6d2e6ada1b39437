"""The lunch-peak schedules from the cluster declaration: cron in Beijing time, lead time, one place per tier."""

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.variables import Variable

from deployments.lunch_peak import lead_minutes, lunch_peak_schedules, peak_crons
from deployments.serve import NoServer, require_server, runner_deployments
from devstack.prefect_server import PrefectServer
from flows.autoscaling_steps.outcome import launch_seconds_variable
from flows.declaration import ClusterDeclaration
from flows.parameters import LunchPeak


def declaration(tier: str = "session", lunch_peak_by: str = "prefect", **peak: object) -> ClusterDeclaration:
    return ClusterDeclaration.model_validate(
        {tier: {"autoscaling": {"peak": peak}}, "lunch_peak_by": lunch_peak_by, "late_after_minutes": 25}
    )


def test_lead_declared_else_measured_plus_margin_else_15() -> None:
    assert lead_minutes(LunchPeak(lead_minutes=7), 1000.0) == 7
    assert lead_minutes(LunchPeak(margin_minutes=5), 250.0) == 5 + 5  # 250 s -> 5 whole minutes
    assert lead_minutes(LunchPeak(), None) == 15


def test_crons_in_beijing_time() -> None:
    assert peak_crons(LunchPeak(), 15) == ("45 10 * * *", "0 13 * * *")
    assert peak_crons(LunchPeak(start="09:05", end="12:30", days_of_week="1-5"), 70) == (
        "55 7 * * 1-5",
        "30 12 * * 1-5",
    )
    with pytest.raises(ValueError, match="before midnight"):
        peak_crons(LunchPeak(start="01:00", end="02:00"), 90)


def test_schedules_carry_their_own_parameters() -> None:
    out, back = lunch_peak_schedules(declaration("business", extra=3, lead_minutes=20), "business")
    assert (out.cron, out.timezone, out.slug, out.active) == ("40 10 * * *", "Asia/Shanghai", "peak-out", True)
    assert out.parameters == {"params": {"tier": "business", "capacity": "+3", "late_after_minutes": 25}}
    assert (back.cron, back.slug) == ("0 13 * * *", "peak-in")
    assert back.parameters == {"params": {"tier": "business", "capacity": "-3", "late_after_minutes": 25}}


def test_autoscaling_schedules_the_peak_so_prefect_schedules_are_inactive() -> None:
    schedules = lunch_peak_schedules(declaration(lunch_peak_by="autoscaling", lead_minutes=10), "session")
    assert [s.active for s in schedules] == [False, False]


def test_the_measured_launch_time_sets_the_lead(prefect_server: PrefectServer) -> None:
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        Variable.set(launch_seconds_variable("ap-guangzhou", "session"), 400.0, overwrite=True)
        try:
            out, _ = lunch_peak_schedules(declaration(margin_minutes=3), "session")
            assert out.cron == "50 10 * * *"  # 11:00 - (ceil(400 s) = 7 + 3) min
        finally:
            Variable.unset(launch_seconds_variable("ap-guangzhou", "session"))
        out, _ = lunch_peak_schedules(declaration(), "session")
        assert out.cron == "45 10 * * *"  # nothing measured: 15 min


def test_serve_builds_every_deployment_with_the_declared_peak(prefect_server: PrefectServer) -> None:
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):  # the measured lead is read there
        made = {d.name: d for d in runner_deployments(declaration(extra=4, lead_minutes=30))}
    assert set(made) == {"cluster", "session-tier", "business-tier", "cleanup", "autoscaling", "verify", "capacity",
                         "lunch-peak-session", "lunch-peak-business", "plan"}  # fmt: skip
    session = made["lunch-peak-session"].schedules
    assert [s.schedule.cron for s in session] == ["30 10 * * *", "0 13 * * *"]
    assert session[0].parameters["params"]["capacity"] == "+4"
    assert [s.schedule.cron for s in made["lunch-peak-business"].schedules] == ["45 10 * * *", "0 13 * * *"]
    assert made["cluster"].concurrency_limit is None and not made["capacity"].schedules  # the tier locks serialise
    assert made["cleanup"].concurrency_limit == 1
    assert all(d.description for d in made.values())


def test_serve_refuses_without_a_server() -> None:
    with temporary_settings(restore_defaults={PREFECT_API_URL}), pytest.raises(NoServer, match="PREFECT_API_URL"):
        require_server()


def test_late_reason_counts_from_the_expected_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime, timedelta

    from flows.autoscaling_steps import lateness

    scheduled = datetime(2026, 12, 1, 2, 45, tzinfo=UTC)
    monkeypatch.setattr(lateness, "expected_start", lambda: scheduled)
    assert lateness.late_reason(20, scheduled + timedelta(minutes=19)) is None
    assert lateness.late_reason(None, scheduled + timedelta(hours=5)) is None
    reason = lateness.late_reason(20, scheduled + timedelta(hours=4, minutes=15))
    assert reason and "255 min late" in reason and "02:45:00 UTC" in reason and "nothing was changed" in reason


def test_a_scheduled_set_capacity_for_an_autoscaling_peak_changes_nothing(
    prefect_server: PrefectServer, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    from flows.autoscaling_steps import lateness
    from flows.parameters import CapacityParameters
    from flows.set_capacity import set_capacity

    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("lunch_peak_by: autoscaling\nbusiness: {region: ap-nowhere-1}\n")
    monkeypatch.setenv("TCSCALE_CLUSTER_FILE", str(cluster))
    monkeypatch.setattr(lateness, "auto_scheduled", lambda: True)  # as if Prefect's scheduler made the run
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        outcome = set_capacity(CapacityParameters(tier="business", capacity="+2", late_after_minutes=20))
    assert outcome.skipped and "lunch_peak_by: autoscaling" in outcome.skipped  # no cloud call: no such region


def test_the_fixed_peaks_schedule_changes_nothing_once_the_forecast_plan_replaces_it(
    prefect_server: PrefectServer, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """`prefect deploy --all` makes prefect.yaml's peak-out active whatever the declaration says: under
    `capacity_plan: forecast` a run it makes is skipped; the plan's own schedules' runs are not."""
    from flows.autoscaling_steps import lateness
    from flows.parameters import CapacityParameters
    from flows.set_capacity import set_capacity

    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("capacity_plan: forecast\nbusiness: {region: ap-nowhere-1}\n")
    monkeypatch.setenv("TCSCALE_CLUSTER_FILE", str(cluster))
    monkeypatch.setattr(lateness, "auto_scheduled", lambda: True)  # as if Prefect's scheduler made the run
    monkeypatch.setattr(lateness, "schedule_slug", lambda: "peak-out")  # ... from this schedule
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        outcome = set_capacity(CapacityParameters(tier="business", capacity="+2", late_after_minutes=20))
    assert outcome.skipped and "capacity_plan: forecast" in outcome.skipped  # no cloud call: no such region
    assert lateness.peak_elsewhere_reason("business", ClusterDeclaration(capacity_plan="forecast")) is not None
    monkeypatch.setattr(lateness, "schedule_slug", lambda: "plan-daily-1130")
    assert lateness.peak_elsewhere_reason("business", ClusterDeclaration(capacity_plan="forecast")) is None
