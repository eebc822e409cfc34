# pulumi.runtime.test, which every test here carries, has no type hints.
# mypy: disable-error-code="untyped-decorator"
"""Stack-specific invariants of the Pulumi program, under Pulumi's mock runtime."""

from __future__ import annotations

import importlib
import json
import re
from typing import Any

import pytest
import yaml

import pulumi
from dry_run import settings as dry_run_settings
from migrate import settings as migrate_settings
from tests.infra.harness import (
    ACCOUNT,
    REGION,
    STACKS,
    RecordingMocks,
    Resource,
    recorded_stack,
    run_stack,
    stack_config,
)
from tests.support import MIGRATIONS_DIR, REPO_ROOT

FUNCTION = "aws:lambda/function:Function"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
SCHEDULE = "aws:scheduler/schedule:Schedule"
SANDBOX = ["+5511999990000", "qa@example.com"]
# Once a day: every day at a fixed minute and hour, or a rate of one day.
DAILY = re.compile(r"^(rate\(1 day\)|cron\(\d{1,2} \d{1,2} \* \* \? \*\))$")


def dry_run_function(mocks: RecordingMocks) -> Resource:
    return mocks.one(FUNCTION, "dry-run")


def migrate_function(mocks: RecordingMocks) -> Resource:
    return mocks.one(FUNCTION, "migrate")


def role_statements(mocks: RecordingMocks, role_arn: str) -> list[dict[str, Any]]:
    """Every statement of every inline policy of the role with this ARN."""
    roles = [r for r in mocks.of_type(ROLE) if r.outputs["arn"] == role_arn]
    assert len(roles) == 1, f"expected one role {role_arn}, got {roles}"
    return [
        item
        for policy in mocks.of_type(ROLE_POLICY)
        if policy.inputs["role"] == roles[0].id
        for item in json.loads(policy.inputs["policy"])["Statement"]
    ]


def stack_database(stack: str, mocks: RecordingMocks) -> dict[str, str]:
    """The endpoint, cluster resource id and master secret ARN of the stack's database."""
    config = stack_config(stack)
    if config["micro-agent:createDatabase"] == "true":
        cluster = mocks.one("aws:rds/cluster:Cluster").outputs
        return {
            "endpoint": cluster["endpoint"],
            "cluster_resource_id": cluster["clusterResourceId"],
            "secret_arn": cluster["masterUserSecrets"][0]["secretArn"],
        }
    return {
        "endpoint": config["micro-agent:dbEndpoint"],
        "cluster_resource_id": config["micro-agent:dbClusterResourceId"],
        "secret_arn": config["micro-agent:dbSecretArn"],
    }


# --- the project and stack files -------------------------------------------------------------


def test_every_config_key_is_declared_with_type_default_and_description() -> None:
    project = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())
    assert (project["runtime"]["name"], project["main"]) == ("python", "pulumi/")
    for key, spec in project["config"].items():
        assert {"type", "default", "description"} <= set(spec), key
    for stack in STACKS:
        stack_file = yaml.safe_load((REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
        assert stack_file["aws:region"]
        undeclared = {
            key.split(":", 1)[1] for key in stack_file if key.startswith("micro-agent:")
        } - set(project["config"])
        assert undeclared == set(), f"Pulumi.{stack}.yaml sets undeclared keys {undeclared}"


def test_the_program_folder_has_no_init_module() -> None:
    # With one, pulumi/ would shadow the installed pulumi package for tests run from the root.
    assert not (REPO_ROOT / "pulumi" / "__init__.py").exists()


# --- the dry-run function --------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_the_dry_run_function_is_wired_as_configured(stack: str) -> pulumi.Output[None]:
    config = stack_config(stack)

    def check(mocks: RecordingMocks) -> None:
        function = dry_run_function(mocks).inputs
        env = function["environment"]["variables"]
        assert function["handler"] == "dry_run.handler.lambda_handler"
        assert function["runtime"] == "python3.12"
        assert function["architectures"] == ["arm64"]
        assert function["code"].path.endswith("build/dry_run.zip")
        assert env["MICRO_AGENT_DISPARO_ENABLED"] == "false"
        assert function["timeout"] == int(config["micro-agent:dryRunTimeoutSeconds"])
        assert function["memorySize"] == int(config["micro-agent:dryRunMemoryMb"])
        assert function["reservedConcurrentExecutions"] == int(
            config["micro-agent:dryRunReservedConcurrency"]
        )

    return recorded_stack(stack, check)


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_environment_names_are_exactly_those_the_services_read(stack: str) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        dry_run_env = dry_run_function(mocks).inputs["environment"]["variables"]
        migrate_env = migrate_function(mocks).inputs["environment"]["variables"]
        assert set(dry_run_env) == dry_run_settings.DEPLOYED_ENVIRONMENT
        assert set(migrate_env) == migrate_settings.DEPLOYED_ENVIRONMENT

    return recorded_stack(stack, check)


# --- the database: IAM authentication for the dry-run, the master secret for the runner ------


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_the_dry_run_connects_by_iam_authentication_as_its_own_user(
    stack: str,
) -> pulumi.Output[None]:
    user = dry_run_settings.DATABASE_ROLE

    def check(mocks: RecordingMocks) -> None:
        database = stack_database(stack, mocks)
        function = dry_run_function(mocks).inputs
        env = function["environment"]["variables"]
        assert env["DB_IAM_USER"] == user
        assert "DB_SECRET_ARN" not in env
        assert env["DB_HOST"] == database["endpoint"]
        assert env["DB_PORT"] == "5432"
        assert int(env["DB_LOCK_TIMEOUT_MS"]) > 0
        statements = role_statements(mocks, function["role"])
        actions = {action for item in statements for action in item["Action"]}
        assert not {a for a in actions if a.startswith("secretsmanager:")}
        connects = [item["Resource"] for item in statements if "rds-db:connect" in item["Action"]]
        assert connects == [
            [f"arn:aws:rds-db:{REGION}:{ACCOUNT}:dbuser:{database['cluster_resource_id']}/{user}"]
        ]

    return recorded_stack(stack, check)


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_only_the_migration_runner_reads_the_master_secret(stack: str) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        secret_arn = stack_database(stack, mocks)["secret_arn"]
        runner = migrate_function(mocks).inputs
        assert runner["environment"]["variables"]["DB_SECRET_ARN"] == secret_arn
        runner_role = next(r for r in mocks.of_type(ROLE) if r.outputs["arn"] == runner["role"])
        readers = [
            (policy.inputs["role"], item["Resource"])
            for policy in mocks.of_type(ROLE_POLICY)
            for item in json.loads(policy.inputs["policy"])["Statement"]
            if any(action.startswith("secretsmanager:") for action in item["Action"])
        ]
        assert readers == [(runner_role.id, [secret_arn])]

    return recorded_stack(stack, check)


def test_the_dry_run_database_user_is_one_the_migrations_create() -> None:
    user = dry_run_settings.DATABASE_ROLE
    sql = "\n".join(path.read_text() for path in sorted(MIGRATIONS_DIR.glob("*.sql")))
    assert re.search(rf'CREATE ROLE "?{user}\b', sql)
    assert re.search(rf'GRANT rds_iam TO "?{user}\b', sql)


@pulumi.runtime.test
def test_handler_strings_resolve_to_callables_in_the_service_packages() -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        handlers = {r.inputs["handler"] for r in mocks.of_type(FUNCTION)}
        assert handlers == {"dry_run.handler.lambda_handler", "migrate.handler.lambda_handler"}
        for handler in handlers:
            module_name, _, attribute = handler.rpartition(".")
            assert callable(getattr(importlib.import_module(module_name), attribute))

    return recorded_stack("dev", check)


# --- the flag --------------------------------------------------------------------------------


def _comparable(resources: list[Resource]) -> dict[str, Any]:
    return {
        f"{r.type}::{r.name}": json.loads(json.dumps(r.inputs, default=lambda o: repr(vars(o))))
        for r in resources
    }


@pytest.fixture
def flag_runs() -> dict[str, RecordingMocks]:
    """Staging with sandbox recipients, once with the flag off and once on."""
    runs: dict[str, RecordingMocks] = {}
    for state in (False, True):

        @pulumi.runtime.test
        def record(state: bool = state) -> pulumi.Output[None]:
            def keep(mocks: RecordingMocks, components: dict[str, Any]) -> None:
                runs[str(state)] = mocks

            return run_stack("staging", keep, disparoEnabled=state, sandboxRecipients=SANDBOX)

        record()
    return runs


@pulumi.runtime.test
def test_flipping_the_flag_flips_the_variable_and_nothing_else(
    flag_runs: dict[str, RecordingMocks],
) -> pulumi.Output[None]:
    def check(runs: dict[str, RecordingMocks]) -> None:
        off, on = _comparable(runs["False"].resources), _comparable(runs["True"].resources)
        assert off.keys() == on.keys()
        changed = [key for key in off if off[key] != on[key]]
        assert changed == ["aws:lambda/function:Function::dry-run-function"]
        env_off = off[changed[0]]["environment"]["variables"]
        env_on = on[changed[0]]["environment"]["variables"]
        assert (env_off["MICRO_AGENT_DISPARO_ENABLED"], env_on["MICRO_AGENT_DISPARO_ENABLED"]) == (
            "false",
            "true",
        )
        assert {k for k in env_off if env_off[k] != env_on[k]} == {"MICRO_AGENT_DISPARO_ENABLED"}
        assert env_on["MICRO_AGENT_SANDBOX_RECIPIENTS"] == ",".join(SANDBOX)

    return pulumi.Output.from_input(flag_runs).apply(check)


@pytest.mark.parametrize("stack", ["dev", "staging"])
@pulumi.runtime.test
def test_the_flag_cannot_go_on_outside_prod_without_sandbox_recipients(stack: str) -> None:
    from config import StackConfigError

    with pytest.raises(StackConfigError, match=f"disparoEnabled is true on stack '{stack}'"):
        run_stack(stack, lambda mocks, components: None, disparoEnabled=True)


@pulumi.runtime.test
def test_prod_may_dispatch_to_anyone_once_the_flag_is_on() -> pulumi.Output[None]:
    def check(mocks: RecordingMocks, components: dict[str, Any]) -> None:
        env = dry_run_function(mocks).inputs["environment"]["variables"]
        assert env["MICRO_AGENT_DISPARO_ENABLED"] == "true"
        assert env["MICRO_AGENT_SANDBOX_RECIPIENTS"] == ""

    return run_stack("prod", check, disparoEnabled=True)


# --- migrations, database, schedule, alarms, dashboard ---------------------------------------


@pulumi.runtime.test
def test_migrations_run_during_up_before_the_dry_run_function_changes() -> pulumi.Output[None]:
    from migration import migrations_hash

    expected = migrations_hash(MIGRATIONS_DIR)

    def check(mocks: RecordingMocks, components: dict[str, Any]) -> None:
        invocation = mocks.one("aws:lambda/invocation:Invocation").inputs
        assert json.loads(invocation["input"]) == {"action": "apply", "migrationsHash": expected}
        assert invocation["triggers"] == {"migrationsHash": expected}
        assert invocation["functionName"] == migrate_function(mocks).inputs["name"]
        runner = migrate_function(mocks).inputs
        assert runner["reservedConcurrentExecutions"] == 1
        runner_async = [
            c.inputs
            for c in mocks.of_type("aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig")
            if c.inputs["functionName"] == runner["name"]
        ]
        assert runner_async[0]["maximumRetryAttempts"] == 0
        assert components["migrate"].invocation in components["dry_run"].depends_on

    return run_stack("dev", check)


def test_the_migrations_hash_changes_with_any_file(tmp_path: Any) -> None:
    from migration import migrations_hash

    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x int);")
    before = migrations_hash(tmp_path)
    (tmp_path / "0001_a.sql").write_text("CREATE TABLE a (x bigint);")
    assert migrations_hash(tmp_path) != before


@pulumi.runtime.test
def test_dev_references_its_database_from_config() -> pulumi.Output[None]:
    config = stack_config("dev")

    def check(mocks: RecordingMocks) -> None:
        assert mocks.of_type("aws:rds/cluster:Cluster") == []
        dry_run_env = dry_run_function(mocks).inputs["environment"]["variables"]
        migrate_env = migrate_function(mocks).inputs["environment"]["variables"]
        assert migrate_env["DB_SECRET_ARN"] == config["micro-agent:dbSecretArn"]
        assert dry_run_env["DB_HOST"] == migrate_env["DB_HOST"] == config["micro-agent:dbEndpoint"]

    return recorded_stack("dev", check)


@pytest.mark.parametrize("stack", ["staging", "prod"])
@pulumi.runtime.test
def test_a_created_aurora_cluster_is_hardened(stack: str) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        cluster = mocks.one("aws:rds/cluster:Cluster").inputs
        assert cluster["engine"] == "aurora-postgresql"
        assert cluster["storageEncrypted"] is True
        assert cluster["iamDatabaseAuthenticationEnabled"] is True
        assert cluster["manageMasterUserPassword"] is True
        assert cluster["backupRetentionPeriod"] >= 7
        assert cluster["enabledCloudwatchLogsExports"] == ["postgresql"]
        assert "serverlessv2ScalingConfiguration" in cluster
        assert cluster["port"] == 5432
        assert cluster["deletionProtection"] is (stack == "prod")
        assert cluster["skipFinalSnapshot"] is (stack != "prod")
        subnets = mocks.one("aws:rds/subnetGroup:SubnetGroup").inputs["subnetIds"]
        assert len(subnets) >= 2
        assert mocks.one("aws:rds/clusterInstance:ClusterInstance").inputs["instanceClass"] == (
            "db.serverless"
        )
        env = migrate_function(mocks).inputs["environment"]["variables"]
        assert env["DB_SECRET_ARN"].endswith("secret:rds!cluster-1")

    return recorded_stack(stack, check)


@pytest.mark.parametrize(("stack", "days"), [("dev", 14), ("staging", 30), ("prod", 365)])
@pulumi.runtime.test
def test_log_retention_follows_the_stack(stack: str, days: int) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        groups = mocks.of_type("aws:cloudwatch/logGroup:LogGroup")
        assert {g.inputs["retentionInDays"] for g in groups} == {days}

    return recorded_stack(stack, check)


@pytest.mark.parametrize(("stack", "schedules"), [("dev", 0), ("staging", 1), ("prod", 1)])
@pulumi.runtime.test
def test_the_schedule_exists_only_where_configured(
    stack: str, schedules: int
) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        dry_run_arn = dry_run_function(mocks).outputs["arn"]
        found = [s for s in mocks.of_type(SCHEDULE) if s.inputs["target"]["arn"] == dry_run_arn]
        assert len(found) == schedules
        for schedule in found:
            target = schedule.inputs["target"]
            assert json.loads(target["input"]) == {"tenantId": "test-001", "batchSize": 50}

    return recorded_stack(stack, check)


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_ledger_maintenance_runs_daily_on_the_migration_runner(stack: str) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        runner_arn = migrate_function(mocks).outputs["arn"]
        found = [s for s in mocks.of_type(SCHEDULE) if s.inputs["target"]["arn"] == runner_arn]
        assert len(found) == 1
        schedule = found[0].inputs
        assert json.loads(schedule["target"]["input"]) == {"action": "maintain"}
        assert DAILY.match(schedule["scheduleExpression"]), schedule["scheduleExpression"]
        assert schedule.get("state", "ENABLED") == "ENABLED"
        grants = [
            (item["Effect"], item["Action"], item["Resource"])
            for item in role_statements(mocks, schedule["target"]["roleArn"])
        ]
        assert grants == [("Allow", ["lambda:InvokeFunction"], [runner_arn])]

    return recorded_stack(stack, check)


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_the_runner_keeps_the_configured_ledger_retention(stack: str) -> pulumi.Output[None]:
    config = stack_config(stack)

    def check(mocks: RecordingMocks) -> None:
        env = migrate_function(mocks).inputs["environment"]["variables"]
        assert env["LEDGER_RETENTION_DAYS"] == config["micro-agent:ledgerRetentionDays"]

    return recorded_stack(stack, check)


@pulumi.runtime.test
def test_a_longer_ledger_retention_reaches_the_runner() -> pulumi.Output[None]:
    def check(mocks: RecordingMocks, components: dict[str, Any]) -> None:
        env = migrate_function(mocks).inputs["environment"]["variables"]
        assert env["LEDGER_RETENTION_DAYS"] == "731"

    return run_stack("prod", check, ledgerRetentionDays=731)


@pulumi.runtime.test
def test_alarms_cover_errors_throttles_duration_migrations_and_rejections() -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        alarms = {a.name: a.inputs for a in mocks.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
        assert set(alarms) == {
            "alarms-dry-run-errors",
            "alarms-dry-run-throttles",
            "alarms-dry-run-duration",
            "alarms-migrate-errors",
            "alarms-rejected-events",
        }
        assert alarms["alarms-dry-run-duration"]["threshold"] == 60 * 1000 * 0.8
        assert alarms["alarms-rejected-events"]["metricName"] == "RejectedEvents"
        assert alarms["alarms-rejected-events"]["namespace"] == "MicroAgent"

    return recorded_stack("dev", check)


@pulumi.runtime.test
def test_the_dashboard_shows_decisions_reasons_errors_and_duration() -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        body = json.loads(mocks.one("aws:cloudwatch/dashboard:Dashboard").inputs["dashboardBody"])
        titles = [w["properties"]["title"] for w in body["widgets"]]
        assert titles == [
            "Decisions by channel and action",
            "Skipped and deferred by reason",
            "Errors",
            "Duration (ms)",
        ]
        text = json.dumps(body)
        assert '"Decisions"' in text
        assert "DecisionReasons" in text
        assert "micro-agent-dev-dry-run" in text

    return recorded_stack("dev", check)


@pulumi.runtime.test
def test_the_alerts_key_policy_names_both_function_roles() -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        key = json.loads(mocks.one("aws:kms/key:Key").inputs["policy"])
        publishers = next(s for s in key["Statement"] if s["Sid"] == "FunctionsPublishOnFailure")
        roles = {r.name for r in mocks.of_type("aws:iam/role:Role")}
        assert {"dry-run-role", "migrate-role"} <= roles
        assert len(publishers["Principal"]["AWS"]) == 2
        subscriptions = mocks.of_type("aws:sns/topicSubscription:TopicSubscription")
        assert [s.inputs["endpoint"] for s in subscriptions] == ["oncall@example.com"]

    return recorded_stack("prod", check)


@pulumi.runtime.test
def test_an_uploaded_artifact_key_replaces_the_local_zip() -> pulumi.Output[None]:
    def check(mocks: RecordingMocks, components: dict[str, Any]) -> None:
        function = dry_run_function(mocks).inputs
        assert function["s3Key"] == "dry_run/abc123.zip"
        assert function["s3Bucket"] == "artifacts-bucket-bucket-1a2b3c"
        assert "code" not in function

    return run_stack("dev", check, dryRunArtifactKey="dry_run/abc123.zip")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"lambdaRuntime": "python3.9"}, "lambdaRuntime: expected one of"),
        ({"lambdaArchitecture": "sparc"}, "lambdaArchitecture: expected one of"),
        ({"logRetentionDays": 13}, "logRetentionDays: expected a value CloudWatch accepts"),
        ({"vpcSubnetIds": ["subnet-0de0000000000a01"]}, "vpcSubnetIds: expected at least two"),
        ({"vpcSecurityGroupIds": []}, "vpcSecurityGroupIds: expected at least one"),
        ({"dbSecretArn": ""}, "dbSecretArn: expected the ARN"),
        ({"dbClusterResourceId": ""}, "dbClusterResourceId: expected the referenced cluster's"),
        ({"dbClusterResourceId": "cluster-*"}, "dbClusterResourceId: expected the referenced"),
        ({"dbClusterResourceId": "cluster-abc123"}, "dbClusterResourceId: expected"),
        ({"createDatabase": True, "dbBackupRetentionDays": 3}, "dbBackupRetentionDays"),
        ({"dbMinCapacity": "0.3"}, "dbMinCapacity: expected ACUs"),
        ({"dryRunTimeoutSeconds": 901}, "dryRunTimeoutSeconds: expected an integer from 1"),
        ({"asyncMaxRetryAttempts": 3}, "asyncMaxRetryAttempts: expected an integer from 0 to 2"),
        ({"scheduleTenants": ["bad tenant"]}, "scheduleTenants: not tenant ids"),
        ({"ledgerRetentionDays": 34}, "ledgerRetentionDays: expected at least 35 days"),
    ],
)
@pulumi.runtime.test
def test_bad_stack_settings_fail_with_one_line_naming_the_key(
    overrides: dict[str, Any], message: str
) -> None:
    from config import StackConfigError

    with pytest.raises(StackConfigError, match=message) as caught:
        run_stack("dev", lambda mocks, components: None, **overrides)
    assert "\n" not in str(caught.value)


def test_the_maintenance_action_is_one_the_migrate_handler_accepts() -> None:
    from migrate.handler import ACTIONS

    maintenance = importlib.import_module("maintenance")  # the program's module (pulumi/)

    assert maintenance.MAINTENANCE_INPUT["action"] in ACTIONS
