# pulumi.runtime.test, which every test here carries, has no type hints.
# mypy: disable-error-code="untyped-decorator"
"""Every policy check on every real stack, and each check catching a deliberately bad resource."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pulumi_aws as aws
import pytest

import pulumi
from tests.infra.harness import STACKS, RecordingMocks, recorded_stack, run_stack
from tests.infra.policy import CHECKS


@pytest.mark.parametrize("check_name", sorted(CHECKS))
@pytest.mark.parametrize("stack", STACKS)
@pulumi.runtime.test
def test_every_stack_passes_every_policy_check(stack: str, check_name: str) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks) -> None:
        assert CHECKS[check_name](mocks) == []

    return recorded_stack(stack, check)


def _policy(effect: str, action: Any, resource: Any, principal: Any = None) -> str:
    item: dict[str, Any] = {"Sid": "Bad", "Effect": effect, "Action": action, "Resource": resource}
    if principal is not None:
        item["Principal"] = principal
    return json.dumps({"Version": "2012-10-17", "Statement": [item]})


def _bad_principal() -> None:
    aws.sns.TopicPolicy(
        "bad-topic-policy",
        arn="arn:aws:sns:sa-east-1:1:t",
        policy=_policy("Allow", "sns:Publish", "*", {"AWS": "*"}),
    )


def _bad_action() -> None:
    aws.iam.RolePolicy("bad-action", role="r", policy=_policy("Allow", "s3:*", "arn:aws:s3:::b/*"))


def _bad_resource() -> None:
    # Lambda's network-interface actions may take "*"; one more action beside them may not.
    actions = ["ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", "sns:Publish"]
    aws.iam.RolePolicy("bad-resource", role="r", policy=_policy("Allow", actions, "*"))


def _managed_policy() -> None:
    aws.iam.RolePolicyAttachment(
        "bad-vpc-access",
        role="r",
        policy_arn="arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole",
    )


def _log_writes_anywhere() -> None:
    # What AWSLambdaVPCAccessExecutionRole grants besides the network interfaces.
    actions = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
    aws.iam.RolePolicy("bad-log-writes", role="r", policy=_policy("Allow", actions, "*"))


def _connect_as_any_user() -> None:
    aws.iam.RolePolicy(
        "bad-connect",
        role="r",
        policy=_policy(
            "Allow", "rds-db:connect", "arn:aws:rds-db:sa-east-1:123456789012:dbuser:*/*"
        ),
    )


def _invoke_any_function() -> None:
    aws.iam.RolePolicy(
        "bad-invoke",
        role="r",
        policy=_policy(
            "Allow", "lambda:InvokeFunction", "arn:aws:lambda:sa-east-1:123456789012:function:*"
        ),
    )


def _read_every_secret() -> None:
    aws.iam.RolePolicy(
        "bad-secret-read",
        role="r",
        policy=_policy(
            "Allow",
            "secretsmanager:GetSecretValue",
            "arn:aws:secretsmanager:sa-east-1:123456789012:secret:micro-agent/*",
        ),
    )


def _send_as_anyone() -> None:
    aws.iam.RolePolicy(
        "bad-send",
        role="r",
        policy=_policy(
            "Allow", "ses:SendRawEmail", "arn:aws:ses:sa-east-1:123456789012:identity/*"
        ),
    )


def _service_from_any_account() -> None:
    aws.sns.TopicPolicy(
        "bad-service-grant",
        arn="arn:aws:sns:sa-east-1:123456789012:t",
        policy=_policy(
            "Allow",
            "sns:Publish",
            "arn:aws:sns:sa-east-1:123456789012:t",
            {"Service": "ses.amazonaws.com"},
        ),
    )


def _bad_bucket() -> None:
    aws.s3.Bucket("bad-bucket", tags={"project": "p", "stack": "s", "service": "x"})


def _bad_topic() -> None:
    aws.sns.Topic("bad-topic", kms_master_key_id="alias/aws/sns")


def _bad_alarm() -> None:
    aws.cloudwatch.MetricAlarm(
        "bad-alarm",
        comparison_operator="GreaterThanThreshold",
        evaluation_periods=1,
        metric_name="Errors",
        namespace="AWS/Lambda",
        period=60,
        statistic="Sum",
        threshold=0,
        alarm_actions=[],
        tags={"project": "p", "stack": "s", "service": "x"},
    )


def _bad_function() -> None:
    aws.lambda_.Function(
        "bad-function",
        name="bad",
        role="arn:aws:iam::1:role/r",
        runtime="python3.12",
        handler="x.y",
        tags={"project": "p", "stack": "s", "service": "x"},
    )


def _untagged() -> None:
    aws.cloudwatch.LogGroup("bad-logs", name="/aws/lambda/untagged", retention_in_days=1)


def _overgranted_role() -> None:
    aws.iam.RolePolicy(
        "bad-grant", role="r", policy=_policy("Allow", ["s3:GetObject"], ["arn:aws:s3:::b/*"])
    )


BAD: dict[str, tuple[Callable[[], None], str]] = {
    "allow_has_no_wildcard_principal": (_bad_principal, "bad-topic-policy"),
    "allow_has_no_wildcard_action": (_bad_action, "bad-action"),
    "identity_policies_name_their_resources": (_bad_resource, "bad-resource"),
    "roles_have_no_managed_policies": (_managed_policy, "bad-vpc-access"),
    "log_writes_name_their_own_log_group": (_log_writes_anywhere, "bad-log-writes"),
    "database_connect_names_one_user": (_connect_as_any_user, "bad-connect"),
    "invocations_name_functions_of_this_stack": (_invoke_any_function, "bad-invoke"),
    "secret_reads_and_email_sends_name_their_resources": (_read_every_secret, "bad-secret-read"),
    "service_grants_are_scoped_to_this_account": (_service_from_any_account, "bad-service-grant"),
    "buckets_are_private_encrypted_versioned_tls_only": (_bad_bucket, "bad-bucket"),
    "topics_use_a_rotated_customer_key_their_publishers_can_use": (_bad_topic, "bad-topic"),
    "alarms_notify_the_alerts_topic": (_bad_alarm, "bad-alarm"),
    "functions_have_logs_async_config_and_vpc": (_bad_function, "bad"),
    "taggable_resources_carry_project_stack_service": (_untagged, "bad-logs"),
    "roles_hold_only_what_their_function_needs": (_overgranted_role, "bad-grant"),
}


def test_every_check_has_a_failing_case() -> None:
    assert set(BAD) == set(CHECKS)


@pytest.mark.parametrize("check_name", sorted(BAD))
@pulumi.runtime.test
def test_each_check_catches_a_deliberately_bad_resource(check_name: str) -> pulumi.Output[None]:
    add_bad_resource, name = BAD[check_name]

    def check(mocks: RecordingMocks, components: dict[str, Any]) -> None:
        violations = CHECKS[check_name](mocks)
        assert violations, f"{check_name} missed the bad resource"
        assert any(name in violation for violation in violations), violations

    return run_stack("dev", check, extra=add_bad_resource)


# --- the same checks, on the other ways a resource can go wrong ---------------------------------


def _topic_key_without_its_publisher() -> None:
    # A rotating key of this stack whose policy forgets SES, on a topic SES events go to.
    key = aws.kms.Key(
        "bad-events-key",
        enable_key_rotation=True,
        policy=_policy("Allow", "kms:Decrypt", "*", {"AWS": "arn:aws:iam::123456789012:root"}),
        tags={"project": "p", "stack": "s", "service": "x"},
    )
    topic = aws.sns.Topic(
        "bad-events-topic",
        name="bad-events",
        kms_master_key_id=key.arn,
        tags={"project": "p", "stack": "s", "service": "x"},
    )
    aws.sesv2.ConfigurationSetEventDestination(
        "bad-events-destination",
        configuration_set_name="c",
        event_destination_name="sns",
        event_destination=aws.sesv2.ConfigurationSetEventDestinationEventDestinationArgs(
            matching_event_types=["BOUNCE"],
            sns_destination=aws.sesv2.ConfigurationSetEventDestinationEventDestinationSnsDestinationArgs(
                topic_arn=topic.arn
            ),
        ),
    )


def _send_from_a_wildcard_configuration_set() -> None:
    aws.iam.RolePolicy(
        "bad-send-set",
        role="r",
        policy=_policy(
            "Allow",
            ["ses:SendEmail"],
            ["arn:aws:ses:sa-east-1:123456789012:configuration-set/micro-agent-dev-*"],
        ),
    )


def _read_a_stack_folder() -> None:
    # Two levels are a whole stack (its database secret included), not a folder of it.
    aws.iam.RolePolicy(
        "bad-stack-read",
        role="r",
        policy=_policy(
            "Allow",
            "secretsmanager:GetSecretValue",
            "arn:aws:secretsmanager:sa-east-1:123456789012:secret:micro-agent/dev/*",
        ),
    )


MORE_BAD: list[tuple[str, Callable[[], None], str]] = [
    (
        "topics_use_a_rotated_customer_key_their_publishers_can_use",
        _topic_key_without_its_publisher,
        "bad-events-key: ses.amazonaws.com publishes to bad-events-topic",
    ),
    ("secret_reads_and_email_sends_name_their_resources", _send_as_anyone, "bad-send"),
    (
        "secret_reads_and_email_sends_name_their_resources",
        _send_from_a_wildcard_configuration_set,
        "bad-send-set",
    ),
    ("secret_reads_and_email_sends_name_their_resources", _read_a_stack_folder, "bad-stack-read"),
]


@pytest.mark.parametrize(("check_name", "add_bad_resource", "expected"), MORE_BAD)
@pulumi.runtime.test
def test_checks_catch_more_kinds_of_bad_resource(
    check_name: str, add_bad_resource: Callable[[], None], expected: str
) -> pulumi.Output[None]:
    def check(mocks: RecordingMocks, components: dict[str, Any]) -> None:
        violations = CHECKS[check_name](mocks)
        assert any(expected in violation for violation in violations), violations

    return run_stack("dev", check, extra=add_bad_resource)
