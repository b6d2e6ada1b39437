"""The cluster declaration: read from a file, validated by the flows' models, merged under each run's own values."""

import json
from pathlib import Path

import pytest
import yaml

from devstack.demo import seed_declaration
from flows.declaration import (
    ClusterDeclaration,
    DeclarationError,
    declared,
    dump_declaration,
    load_declaration,
    merge,
    variable_size_problem,
)
from flows.parameters import (
    AutoScalingClusterParameters,
    BusinessTierParameters,
    CapacityParameters,
    CleanupParameters,
    ClusterParameters,
    SessionTierParameters,
)

DECLARED = {
    "session": {
        "region": "ap-shanghai",
        "source": {"instance_ids": ["ins-session"]},
        "business_servers": {"instance_ids": ["ins-business"]},
        "count": 3,
        "ssh": {"port": 2222, "key_secret_block": "tcscale-ssh-key"},
        "load_balancer": {"name": "mp-session", "listener_port": 8080},
        "autoscaling": {"peak": {"extra": 4, "lead_minutes": 20}, "max_size": 9},
        "run_key": "never-declared",
    },
    "business": {
        "region": "ap-shanghai",
        "runtime": "java-tomcat",
        "source": {"tag_key": "role", "tag_value": "web"},
        "ssh": {"port": 2222, "user": "ubuntu"},
    },
    "lunch_peak_by": "prefect",
}


@pytest.fixture
def declaration() -> ClusterDeclaration:
    return ClusterDeclaration.model_validate(DECLARED)


def test_run_values_over_declared_over_defaults(declaration: ClusterDeclaration) -> None:
    asked = CapacityParameters.model_validate(
        {
            "tier": "session",
            "capacity": "+2",
            "session": {"ssh": {"user": "admin"}, "autoscaling": {"peak": {"extra": 1}}},
        }
    )
    params = merge(asked, declaration)
    assert (params.tier, params.capacity) == ("session", "+2")
    session = params.session
    assert session.region == "ap-shanghai" and session.source.instance_ids == ["ins-session"]
    assert (session.ssh.user, session.ssh.port, session.ssh.key_secret_block) == ("admin", 2222, "tcscale-ssh-key")
    assert session.autoscaling.peak.extra == 1  # the run's
    assert session.autoscaling.peak.lead_minutes == 20 and session.autoscaling.max_size == 9  # declared
    assert session.ssh.connect_timeout == 10.0  # the model's default
    assert session.run_key is None  # a run key is never declared
    assert params.business.runtime == "java-tomcat" and params.business.ssh.user == "ubuntu"


def test_a_selector_replaces_the_declared_one_whole(declaration: ClusterDeclaration) -> None:
    params = merge(ClusterParameters.model_validate({"business": {"source": {"name": "web-1"}}}), declaration)
    assert params.business.source.name == "web-1" and params.business.source.tag_key is None
    assert params.session.count == 3 and params.session.load_balancer.name == "mp-session"
    assert not hasattr(params.session, "autoscaling")


def test_each_flow_model_takes_its_part(declaration: ClusterDeclaration) -> None:
    session = merge(SessionTierParameters(), declaration)
    assert session.count == 3 and session.business_servers.instance_ids == ["ins-business"]
    business = merge(BusinessTierParameters(count=1), declaration)
    assert business.count == 1 and business.runtime == "java-tomcat" and business.source.tag_value == "web"
    cleanup = merge(CleanupParameters(run_key="abc"), declaration)
    assert cleanup.run_key == "abc" and cleanup.region == "ap-shanghai" and cleanup.runtime == "java-tomcat"
    assert cleanup.business_servers.instance_ids == ["ins-business"] and cleanup.ssh.user == "ubuntu"
    again = merge(session, declaration)
    assert again == session  # a merged run merged again (a subflow) is unchanged


def test_the_peak_is_scheduled_in_one_place(declaration: ClusterDeclaration) -> None:
    by_prefect = merge(AutoScalingClusterParameters(), declaration)
    assert not by_prefect.session.autoscaling.peak.enabled and by_prefect.session.autoscaling.peak.extra == 4
    by_autoscaling = merge(
        AutoScalingClusterParameters(), declaration.model_copy(update={"lunch_peak_by": "autoscaling"})
    )
    assert by_autoscaling.session.autoscaling.peak.enabled and by_autoscaling.business.autoscaling.peak.enabled


def test_declared_reads_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "cluster.yaml"
    file.write_text(yaml.safe_dump(DECLARED))
    monkeypatch.setenv("TCSCALE_CLUSTER_FILE", str(file))
    loaded = load_declaration()
    assert loaded is not None and loaded.session.region == "ap-shanghai"
    assert declared(SessionTierParameters(dry_run=True)).source.instance_ids == ["ins-session"]
    file.write_text(json.dumps(DECLARED))  # JSON works too
    assert declared(BusinessTierParameters()).runtime == "java-tomcat"


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("session:\n  count: 0\n", "session.count"),
        ("business:\n  runtime: cobol\n", "business.runtime"),
        ("lunch_peak_by: cron\n", "lunch_peak_by"),
        ("sesion: {}\n", "sesion"),
        ("session: [\n", "not YAML or JSON"),
        ("- a list\n", "must be a mapping"),
    ],
)
def test_a_bad_file_is_named_with_its_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, named: str
) -> None:
    file = tmp_path / "cluster.yaml"
    file.write_text(content)
    monkeypatch.setenv("TCSCALE_CLUSTER_FILE", str(file))
    with pytest.raises(DeclarationError) as error:
        load_declaration()
    assert str(file) in str(error.value) and named in str(error.value)


def test_a_missing_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCSCALE_CLUSTER_FILE", str(tmp_path / "nowhere.yaml"))
    with pytest.raises(DeclarationError, match=r"nowhere\.yaml"):
        load_declaration()


SEED = {
    "region": "ap-guangzhou",
    "ports": {"ssh": 2201, "map": {"80": 18080}},
    "key_pair": {"private_key_file": "/tmp/guide.pem"},
    "session_server": {"instance_id": "ins-s1"},
    "business_server": {"instance_id": "ins-b1"},
    "known_hosts": [f"[10.0.0.{i}]:2201 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{'x' * 43}" for i in range(2)],
}


def test_seed_declaration_is_the_demo_parameters_and_fits_a_variable() -> None:
    from devstack.demo import seed_parameters

    declaration = seed_declaration(SEED, 3)
    cluster = merge(ClusterParameters(), declaration)
    assert cluster == seed_parameters(SEED, 3)
    stored = dump_declaration(declaration)
    assert variable_size_problem(stored) is None
    assert ClusterDeclaration.model_validate(stored) == declaration
    assert "more than a Prefect Variable holds" in (variable_size_problem({"x": "y" * 6000}) or "")
