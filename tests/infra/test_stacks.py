# pulumi.runtime.test, which every test here carries, has no type hints.
# mypy: disable-error-code="untyped-decorator"
"""Stack-specific invariants of the Pulumi program, under Pulumi's mock runtime."""

from __future__ import annotations

import fnmatch
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
SES_IDENTITIES = ["example.com", "vendas@example.org"]
SES_EVENT_TYPES = {
    "SEND",
    "REJECT",
    "BOUNCE",
    "COMPLAINT",
    "DELIVERY",
    "DELIVERY_DELAY",
    "RENDERING_FAILURE",
}
# What the sweeper's environment holds besides the database settings it shares with the dry-run.
DATABASE_ENVIRONMENT = {
    "DB_IAM_USER",
    "DB_HOST",
    "DB_PORT",
    "DB_NAME",
    "DB_CONNECT_TIMEOUT_S",
    "DB_STATEMENT_TIMEOUT_MS",
    "DB_LOCK_TIMEOUT_MS",
}
# Once a day: every day at a fixed minute and hour, or a rate of one day.
DAILY = re.compile(r"^(rate\(1 day\)|cron\(\d{1,2} \d{1,2} \* \* \? \*\))$")


def dry_run_function(mocks: RecordingMocks) -> Resource:
    return mocks.one(FUNCTION, "dry-run")


def sweeper_function(mocks: RecordingMocks) -> Resource:
    return mocks.one(FUNCTION, "sweeper")


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


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_sweeper_environment_names_are_exactly_those_the_sweeper_reads(
    stack: str,
) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        sweeper_env = sweeper_function(mocks).inputs["environment"]["variables"]
        assert set(sweeper_env) == dry_run_settings.SWEEPER_DEPLOYED_ENVIRONMENT

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
        read = [i for i in statements if "secretsmanager:GetSecretValue" in i["Action"]]
        assert not [
            arn
            for i in read
            for arn in i["Resource"]
            if fnmatch.fnmatchcase(database["secret_arn"], arn)
        ]
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
            and any(fnmatch.fnmatchcase(secret_arn, arn) for arn in item["Resource"])
        ]
        assert readers == [(runner_role.id, [secret_arn])]

    return recorded_stack(stack, check)


def test_the_dry_run_database_user_is_one_the_migrations_create() -> None:
    user = dry_run_settings.DATABASE_ROLE
    sql = "\n".join(path.read_text() for path in sorted(MIGRATIONS_DIR.glob("*.sql")))
    assert re.search(rf'CREATE ROLE "?{user}\b', sql)
    assert re.search(rf'GRANT rds_iam TO "?{user}\b', sql)


HANDLERS = (
    "dry_run.handler.lambda_handler",
    "dry_run.sweeper.lambda_handler",
    "migrate.handler.lambda_handler",
)


@pulumi.runtime.test
def test_each_function_has_its_own_handler() -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        handlers = sorted(r.inputs["handler"] for r in mocks.of_type(FUNCTION))
        assert handlers == sorted(HANDLERS)

    return recorded_stack("dev", check)


@pytest.mark.parametrize("handler", HANDLERS)
def test_handler_strings_resolve_to_callables_in_the_service_packages(handler: str) -> None:
    module_name, _, attribute = handler.rpartition(".")
    assert callable(getattr(importlib.import_module(module_name), attribute))


# --- live dispatch: its environment, secrets and SES ------------------------------------------


def tenant_secrets_prefix(stack: str) -> str:
    return f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:micro-agent/{stack}/tenants/"


def ses_configuration_set_arn(stack: str) -> str:
    return f"arn:aws:ses:{REGION}:{ACCOUNT}:configuration-set/micro-agent-{stack}-outreach"


def statements_with(items: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    """The statements that allow any action of this service (``secretsmanager:``, ``ses:``)."""
    return [item for item in items if any(a.startswith(prefix) for a in item["Action"])]


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_the_dry_run_gets_what_live_dispatch_needs_by_default(stack: str) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        env = dry_run_function(mocks).inputs["environment"]["variables"]
        secret = mocks.one("aws:secretsmanager/secret:Secret", "unsubscribe")
        assert secret.inputs["name"] == f"micro-agent/{stack}/unsubscribe"
        assert env["WHATSAPP_API_VERSION"] == "v21.0"
        assert env["TENANT_SECRETS_PREFIX"] == tenant_secrets_prefix(stack)
        assert env["UNSUBSCRIBE_URL"] == ""
        assert env["UNSUBSCRIBE_SECRET_ARN"] == secret.outputs["arn"]
        assert env["SES_CONFIGURATION_SET"] == f"micro-agent-{stack}-outreach"
        assert env["SEND_CONCURRENCY"] == "12"

    return recorded_stack(stack, check)


@pulumi.runtime.test
def test_configured_dispatch_settings_reach_the_dry_run() -> pulumi.Output[None]:
    url = "https://abc123.lambda-url.sa-east-1.on.aws/unsubscribe"

    def check(mocks: RecordingMocks, components: dict[str, Any]) -> None:
        env = dry_run_function(mocks).inputs["environment"]["variables"]
        assert env["WHATSAPP_API_VERSION"] == "v22.0"
        assert env["UNSUBSCRIBE_URL"] == url
        assert env["SEND_CONCURRENCY"] == "32"

    return run_stack(
        "staging", check, whatsappApiVersion="v22.0", unsubscribeUrl=url, sendConcurrency=32
    )


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_no_secret_value_passes_through_the_program(stack: str) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        assert mocks.of_type("aws:secretsmanager/secretVersion:SecretVersion") == []
        for secret in mocks.of_type("aws:secretsmanager/secret:Secret"):
            assert "secretString" not in secret.inputs
        for function in mocks.of_type(FUNCTION):
            env = function.inputs["environment"]["variables"]
            assert not {k for k in env if k.endswith(("_TOKEN", "_KEY", "_PASSWORD"))}

    return recorded_stack(stack, check)


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_the_dry_run_reads_only_tenant_secrets_and_the_unsubscribe_key(
    stack: str,
) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        function = dry_run_function(mocks).inputs
        unsubscribe_arn = function["environment"]["variables"]["UNSUBSCRIBE_SECRET_ARN"]
        reads = statements_with(role_statements(mocks, function["role"]), "secretsmanager:")
        assert [(item["Action"], item["Resource"]) for item in reads] == [
            (
                ["secretsmanager:GetSecretValue"],
                [f"{tenant_secrets_prefix(stack)}*", unsubscribe_arn],
            )
        ]
        # Both secrets use the AWS-managed key: no kms grant beyond the alerts key's.
        kms = [i for i in role_statements(mocks, function["role"]) if i["Sid"] != "EncryptAlerts"]
        assert not statements_with(kms, "kms:")

    return recorded_stack(stack, check)


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_without_ses_identities_no_role_may_send_email(stack: str) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        sends = [
            item
            for policy in mocks.of_type(ROLE_POLICY)
            for item in json.loads(policy.inputs["policy"])["Statement"]
            if any(action.startswith("ses:") for action in item["Action"])
        ]
        assert sends == []

    return recorded_stack(stack, check)


@pulumi.runtime.test
def test_the_dry_run_sends_only_as_the_configured_identities() -> pulumi.Output[None]:
    def check(mocks: RecordingMocks, components: dict[str, Any]) -> None:
        function = dry_run_function(mocks).inputs
        sends = statements_with(role_statements(mocks, function["role"]), "ses:")
        assert [(item["Action"], item["Resource"]) for item in sends] == [
            (
                ["ses:SendEmail", "ses:SendRawEmail"],
                [
                    f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/example.com",
                    f"arn:aws:ses:{REGION}:{ACCOUNT}:identity/vendas@example.org",
                    ses_configuration_set_arn("prod"),
                ],
            )
        ]
        others = [
            item
            for role in mocks.of_type(ROLE)
            if role.outputs["arn"] != function["role"]
            for item in statements_with(role_statements(mocks, role.outputs["arn"]), "ses:")
        ]
        assert others == []

    return run_stack("prod", check, sesIdentities=SES_IDENTITIES)


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_the_configuration_set_requires_tls_and_suppresses_bounces(
    stack: str,
) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        config_set = mocks.one("aws:sesv2/configurationSet:ConfigurationSet").inputs
        assert config_set["configurationSetName"] == f"micro-agent-{stack}-outreach"
        assert config_set["deliveryOptions"]["tlsPolicy"] == "REQUIRE"
        assert config_set["reputationOptions"]["reputationMetricsEnabled"] is True
        assert config_set["sendingOptions"]["sendingEnabled"] is True
        assert sorted(config_set["suppressionOptions"]["suppressedReasons"]) == [
            "BOUNCE",
            "COMPLAINT",
        ]
        assert "trackingOptions" not in config_set

    return recorded_stack(stack, check)


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_every_sending_event_reaches_the_ses_events_topic(stack: str) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        topic = mocks.one("aws:sns/topic:Topic", "ses")
        assert topic.inputs["name"] == f"micro-agent-{stack}-ses-events"
        destination = mocks.one(
            "aws:sesv2/configurationSetEventDestination:ConfigurationSetEventDestination"
        ).inputs
        assert destination["configurationSetName"] == f"micro-agent-{stack}-outreach"
        event_destination = destination["eventDestination"]
        assert event_destination["enabled"] is True
        assert event_destination["snsDestination"] == {"topicArn": topic.outputs["arn"]}
        assert set(event_destination["matchingEventTypes"]) == SES_EVENT_TYPES
        assert len(event_destination["matchingEventTypes"]) == len(SES_EVENT_TYPES)

    return recorded_stack(stack, check)


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_only_this_accounts_configuration_set_may_publish_ses_events(
    stack: str,
) -> pulumi.Output[None]:
    expected_condition = {
        "StringEquals": {
            "aws:SourceAccount": ACCOUNT,
            "aws:SourceArn": ses_configuration_set_arn(stack),
        }
    }

    def check(mocks: RecordingMocks) -> None:
        topic = mocks.one("aws:sns/topic:Topic", "ses")
        policies = [
            p
            for p in mocks.of_type("aws:sns/topicPolicy:TopicPolicy")
            if p.inputs["arn"] == topic.outputs["arn"]
        ]
        assert len(policies) == 1
        statements = json.loads(policies[0].inputs["policy"])["Statement"]
        services = [item for item in statements if "Service" in item["Principal"]]
        assert [(i["Principal"], i["Action"], i["Resource"]) for i in services] == [
            ({"Service": "ses.amazonaws.com"}, ["sns:Publish"], [topic.outputs["arn"]])
        ]
        assert services[0]["Condition"] == expected_condition
        key = next(
            k
            for k in mocks.of_type("aws:kms/key:Key")
            if k.outputs["arn"] == topic.inputs["kmsMasterKeyId"]
        )
        key_services = [
            item
            for item in json.loads(key.inputs["policy"])["Statement"]
            if "Service" in item["Principal"]
        ]
        assert [(i["Principal"], sorted(i["Action"])) for i in key_services] == [
            ({"Service": "ses.amazonaws.com"}, ["kms:Decrypt", "kms:GenerateDataKey"])
        ]
        assert key_services[0]["Condition"] == expected_condition
        assert key.inputs["enableKeyRotation"] is True

    return recorded_stack(stack, check)


# --- the claim sweeper -----------------------------------------------------------------------


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_the_sweeper_runs_from_the_dry_run_artifact_as_configured(
    stack: str,
) -> pulumi.Output[None]:
    config = stack_config(stack)
    dry_run_timeout = int(config["micro-agent:dryRunTimeoutSeconds"])

    def check(mocks: RecordingMocks) -> None:
        sweeper = sweeper_function(mocks).inputs
        dry_run = dry_run_function(mocks).inputs
        assert sweeper["name"] == f"micro-agent-{stack}-sweeper"
        assert sweeper["handler"] == "dry_run.sweeper.lambda_handler"
        assert sweeper["code"].path == dry_run["code"].path
        assert (sweeper["timeout"], sweeper["memorySize"]) == (60, 256)
        assert sweeper["reservedConcurrentExecutions"] == 1
        assert sweeper["vpcConfig"] == dry_run["vpcConfig"]
        assert sweeper["role"] != dry_run["role"]
        env = sweeper["environment"]["variables"]
        assert set(env) == DATABASE_ENVIRONMENT | {
            "POWERTOOLS_SERVICE_NAME",
            "POWERTOOLS_METRICS_NAMESPACE",
            "POWERTOOLS_LOG_LEVEL",
            "CLAIM_EXPIRY_S",
        }
        assert env["POWERTOOLS_SERVICE_NAME"] == "micro-agent-sweeper"
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == config["micro-agent:metricsNamespace"]
        assert env["CLAIM_EXPIRY_S"] == str(dry_run_timeout + 60)
        dry_run_env = dry_run["environment"]["variables"]
        assert {k: env[k] for k in DATABASE_ENVIRONMENT if k != "DB_STATEMENT_TIMEOUT_MS"} == {
            k: dry_run_env[k] for k in DATABASE_ENVIRONMENT if k != "DB_STATEMENT_TIMEOUT_MS"
        }
        async_config = [
            c.inputs
            for c in mocks.of_type("aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig")
            if c.inputs["functionName"] == sweeper["name"]
        ]
        assert async_config[0]["maximumRetryAttempts"] == 0

    return recorded_stack(stack, check)


@pulumi.runtime.test
def test_a_claim_expires_a_minute_after_the_dry_run_timeout() -> pulumi.Output[None]:
    def check(mocks: RecordingMocks, components: dict[str, Any]) -> None:
        env = sweeper_function(mocks).inputs["environment"]["variables"]
        assert env["CLAIM_EXPIRY_S"] == "960"

    return run_stack("dev", check, dryRunTimeoutSeconds=900)


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_the_sweeper_connects_as_the_dry_run_user_and_nothing_more(
    stack: str,
) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        database = stack_database(stack, mocks)
        statements = role_statements(mocks, sweeper_function(mocks).inputs["role"])
        user = dry_run_settings.DATABASE_ROLE
        connects = [item["Resource"] for item in statements if "rds-db:connect" in item["Action"]]
        assert connects == [
            [f"arn:aws:rds-db:{REGION}:{ACCOUNT}:dbuser:{database['cluster_resource_id']}/{user}"]
        ]
        assert statements_with(statements, "secretsmanager:") == []
        assert statements_with(statements, "ses:") == []

    return recorded_stack(stack, check)


@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_the_sweeper_runs_every_five_minutes(stack: str) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        sweeper_arn = sweeper_function(mocks).outputs["arn"]
        found = [s for s in mocks.of_type(SCHEDULE) if s.inputs["target"]["arn"] == sweeper_arn]
        assert len(found) == 1
        schedule = found[0].inputs
        assert schedule["scheduleExpression"] == "rate(5 minutes)"
        assert json.loads(schedule["target"]["input"]) == {}
        assert schedule.get("state", "ENABLED") == "ENABLED"
        grants = [
            (item["Effect"], item["Action"], item["Resource"])
            for item in role_statements(mocks, schedule["target"]["roleArn"])
        ]
        assert grants == [("Allow", ["lambda:InvokeFunction"], [sweeper_arn])]

    return recorded_stack(stack, check)


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
            "alarms-sweeper-errors",
            "alarms-dispatch-unknown",
            "alarms-claims-expired",
            "alarms-channel-paused",
            "alarms-dispatch-failed-rate",
        }
        assert alarms["alarms-dry-run-duration"]["threshold"] == 60 * 1000 * 0.8
        assert alarms["alarms-rejected-events"]["metricName"] == "RejectedEvents"
        assert alarms["alarms-rejected-events"]["namespace"] == "MicroAgent"

    return recorded_stack("dev", check)


@pytest.mark.parametrize(
    ("alarm", "metric", "service"),
    [
        ("alarms-dispatch-unknown", "DispatchUnknown", "micro-agent-dry-run"),
        ("alarms-claims-expired", "ClaimsExpired", "micro-agent-sweeper"),
        ("alarms-channel-paused", "ChannelPaused", "micro-agent-dry-run"),
    ],
)
@pulumi.runtime.test
def test_live_dispatch_count_alarms_fire_on_any_occurrence(
    alarm: str, metric: str, service: str
) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        found = mocks.one("aws:cloudwatch/metricAlarm:MetricAlarm", alarm)
        assert found.name == alarm
        inputs = found.inputs
        assert (inputs["namespace"], inputs["metricName"]) == ("MicroAgent", metric)
        assert inputs["dimensions"] == {"service": service}
        assert (inputs["statistic"], inputs["period"]) == ("Sum", 300)
        assert (inputs["comparisonOperator"], inputs["threshold"]) == ("GreaterThanThreshold", 0)
        assert inputs["treatMissingData"] == "notBreaching"
        alerts = mocks.one("aws:sns/topic:Topic", "alerts").outputs["arn"]
        assert inputs["alarmActions"] == [alerts]

    return recorded_stack("dev", check)


@pulumi.runtime.test
def test_the_sweeper_errors_alarm_watches_the_sweeper() -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        inputs = mocks.one("aws:cloudwatch/metricAlarm:MetricAlarm", "sweeper-errors").inputs
        assert (inputs["namespace"], inputs["metricName"]) == ("AWS/Lambda", "Errors")
        assert inputs["dimensions"] == {"FunctionName": "micro-agent-dev-sweeper"}
        assert (inputs["statistic"], inputs["threshold"]) == ("Sum", 0)
        assert inputs["treatMissingData"] == "notBreaching"

    return recorded_stack("dev", check)


@pulumi.runtime.test
def test_the_failed_rate_alarm_judges_fifteen_minutes_of_live_sends() -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        inputs = mocks.one("aws:cloudwatch/metricAlarm:MetricAlarm", "dispatch-failed-rate").inputs
        assert "metricName" not in inputs
        assert (inputs["comparisonOperator"], inputs["threshold"]) == (
            "GreaterThanThreshold",
            0.2,
        )
        assert inputs["treatMissingData"] == "notBreaching"
        queries = {q["id"]: q for q in inputs["metricQueries"]}
        metrics = {
            q["metric"]["metricName"]: q["metric"] for q in queries.values() if q.get("metric")
        }
        assert set(metrics) == {"DispatchSent", "DispatchFailed", "DispatchUnknown"}
        for metric in metrics.values():
            assert metric["namespace"] == "MicroAgent"
            assert metric["dimensions"] == {"service": "micro-agent-dry-run"}
            assert (metric["stat"], metric["period"]) == ("Sum", 900)
        returned = [q for q in queries.values() if q.get("returnData")]
        assert len(returned) == 1
        expression = returned[0]["expression"]
        # The ratio is failed over all three outcomes, and only once there is volume.
        ids = {m["metricName"]: i for i, q in queries.items() if (m := q.get("metric"))}
        total = queries["sends"]["expression"]
        assert all(ids[name] in total for name in metrics)
        assert re.fullmatch(
            rf"IF\(sends >= \d+, FILL\({ids['DispatchFailed']}, 0\) / sends, 0\)", expression
        )

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
            "Live sends by outcome",
        ]
        text = json.dumps(body)
        assert "LiveModeRefused" not in text  # the handler no longer refuses live mode
        for metric in ("DispatchSent", "DispatchFailed", "DispatchUnknown", "ChannelPaused"):
            assert f'"{metric}"' in text
        assert '"Decisions"' in text
        assert "DecisionReasons" in text
        assert "micro-agent-dev-dry-run" in text

    return recorded_stack("dev", check)


@pulumi.runtime.test
def test_the_alerts_key_policy_names_every_function_role() -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        key = json.loads(mocks.one("aws:kms/key:Key", "alerts").inputs["policy"])
        publishers = next(s for s in key["Statement"] if s["Sid"] == "FunctionsPublishOnFailure")
        function_roles = {f.inputs["role"] for f in mocks.of_type(FUNCTION)}
        assert len(function_roles) == 3
        assert set(publishers["Principal"]["AWS"]) == function_roles
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
        ({"whatsappApiVersion": "21.0"}, "whatsappApiVersion: expected a Graph API version"),
        ({"whatsappApiVersion": "v21"}, "whatsappApiVersion: expected a Graph API version"),
        ({"whatsappApiVersion": "v21.0\n"}, "whatsappApiVersion: expected a Graph API version"),
        ({"unsubscribeUrl": "http://u.example.com/"}, "unsubscribeUrl: expected an https:// URL"),
        ({"unsubscribeUrl": "https:///path"}, "unsubscribeUrl: expected an https:// URL"),
        ({"sandboxRecipients": ["5511999990000"]}, "sandboxRecipients: expected E.164 phones"),
        ({"sandboxRecipients": ["+55 11 99999-0000"]}, "sandboxRecipients: expected E.164"),
        ({"sandboxRecipients": ["qa@", "+5511999990000"]}, "sandboxRecipients: expected E.164"),
        ({"sandboxRecipients": ["a@b.com,c@d.com"]}, "sandboxRecipients: expected E.164"),
        ({"sendConcurrency": 0}, "sendConcurrency: expected an integer from 1 to 32, got 0"),
        ({"sendConcurrency": 33}, "sendConcurrency: expected an integer from 1 to 32, got 33"),
        ({"sesIdentities": ["*"]}, "sesIdentities: expected verified SES domains"),
        ({"sesIdentities": ["example"]}, "sesIdentities: expected verified SES domains"),
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
