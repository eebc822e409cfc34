"""Policy checks over the resources a program registered; each returns its violations.

Written once, run on every stack (tests/infra/test_policies.py), each with a deliberately bad
resource it must catch. Resource inputs use the engine's camelCase names.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from tests.infra.harness import RecordingMocks, Resource

Check = Callable[[RecordingMocks], list[str]]

POLICY_FIELDS = {
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/role:Role": "assumeRolePolicy",
    "aws:kms/key:Key": "policy",
    "aws:sns/topicPolicy:TopicPolicy": "policy",
    "aws:s3/bucketPolicy:BucketPolicy": "policy",
}
REQUIRED_TAGS = ("project", "stack", "service")
# What AWS documents a Lambda execution role needs for VPC access ("Giving Lambda functions
# access to resources in an Amazon VPC"); written here again, not imported from the program, so
# that an action added there is caught here.
LAMBDA_VPC_NETWORK_INTERFACE_ACTIONS = frozenset(
    {
        "ec2:CreateNetworkInterface",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSubnets",
        "ec2:DeleteNetworkInterface",
        "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    }
)
# One database user of one cluster, by its resource id: no wildcard anywhere.
_DB_USER_ARN = re.compile(
    r"^arn:aws:rds-db:[a-z0-9-]+:\d{12}:dbuser:cluster-[A-Z0-9]+/[a-z_][a-z0-9_]*$"
)
# A secret by ARN, or every secret in a folder at least three levels deep; no other wildcard.
_SECRET_READ = re.compile(
    r"^arn:aws:secretsmanager:[a-z0-9-]+:\d{12}:secret:"
    r"(?:[^*?]+|[^*?/]+/[^*?/]+/[^*?]+/\*)$"
)
SES_SEND_ACTIONS = frozenset({"ses:SendEmail", "ses:SendRawEmail"})
_SES_SEND_RESOURCE = re.compile(
    r"^arn:aws:ses:[a-z0-9-]+:\d{12}:(?:identity|configuration-set)/[^*?]+$"
)
# Policies attached to a resource (not identity policies, not trust policies).
RESOURCE_POLICIES = (
    "aws:kms/key:Key",
    "aws:sns/topicPolicy:TopicPolicy",
    "aws:s3/bucketPolicy:BucketPolicy",
)
MANAGED_POLICY_ATTACHMENTS = (
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:iam/policyAttachment:PolicyAttachment",
    "aws:iam/rolePolicyAttachmentsExclusive:RolePolicyAttachmentsExclusive",
)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(mocks: RecordingMocks) -> Iterator[tuple[Resource, dict[str, Any]]]:
    """Every statement of every policy document, with the resource holding it."""
    for resource in mocks.resources:
        field = POLICY_FIELDS.get(resource.type)
        if field and resource.inputs.get(field):
            for item in json.loads(resource.inputs[field])["Statement"]:
                yield resource, item


def _principals(item: dict[str, Any]) -> list[str]:
    principal = item.get("Principal")
    if principal is None:
        return []
    if isinstance(principal, str):
        return [principal]
    return [value for values in principal.values() for value in _as_list(values)]


def allow_has_no_wildcard_principal(mocks: RecordingMocks) -> list[str]:
    """No Allow statement names ``*`` as principal (a Deny of ``*`` only restricts)."""
    return [
        f"{resource.name}: statement {item.get('Sid')} allows principal '*'"
        for resource, item in statements(mocks)
        if item["Effect"] == "Allow" and "*" in _principals(item)
    ]


def allow_has_no_wildcard_action(mocks: RecordingMocks) -> list[str]:
    """Every allowed action is listed explicitly: no ``*``, no ``service:*``, no ``Get*``."""
    return [
        f"{resource.name}: statement {item.get('Sid')} allows wildcard action {action!r}"
        for resource, item in statements(mocks)
        if item["Effect"] == "Allow"
        for action in _as_list(item["Action"])
        if "*" in action
    ]


def identity_policies_name_their_resources(mocks: RecordingMocks) -> list[str]:
    """Role policies grant on ``*`` only Lambda's VPC network-interface actions, which AWS
    requires on ``*`` (key policies may: there ``*`` means the key)."""
    return [
        f"{resource.name}: statement {item.get('Sid')} grants "
        f"{sorted(set(_as_list(item['Action'])) - LAMBDA_VPC_NETWORK_INTERFACE_ACTIONS)} "
        "on Resource '*'"
        for resource, item in statements(mocks)
        if resource.type == "aws:iam/rolePolicy:RolePolicy"
        and item["Effect"] == "Allow"
        and "*" in _as_list(item.get("Resource", []))
        and not set(_as_list(item["Action"])) <= LAMBDA_VPC_NETWORK_INTERFACE_ACTIONS
    ]


def roles_have_no_managed_policies(mocks: RecordingMocks) -> list[str]:
    """No role gets a managed policy (AWS's or ours): every grant is an inline statement that
    the other checks read. AWSLambdaVPCAccessExecutionRole, for one, writes logs on ``*``."""
    attached = [
        f"{resource.name}: attaches {resource.inputs.get('policyArn') or resource.inputs}"
        for token in MANAGED_POLICY_ATTACHMENTS
        for resource in mocks.of_type(token)
        if resource.inputs.get("policyArn") or resource.inputs.get("policyArns")
    ]
    return attached + [
        f"{role.name}: managed policies {role.inputs['managedPolicyArns']}"
        for role in mocks.of_type("aws:iam/role:Role")
        if role.inputs.get("managedPolicyArns")
    ]


def log_writes_name_their_own_log_group(mocks: RecordingMocks) -> list[str]:
    """Every statement allowing a ``logs:`` action names log groups of this stack, by ARN:
    never ``*``, never a pattern."""
    own = {
        arn
        for group in mocks.of_type("aws:cloudwatch/logGroup:LogGroup")
        for arn in (group.outputs["arn"], f"{group.outputs['arn']}:*")
    }
    return [
        f"{resource.name}: statement {item.get('Sid')} allows logs actions on {arn!r}"
        for resource, item in statements(mocks)
        if item["Effect"] == "Allow"
        and any(action.startswith("logs:") for action in _as_list(item["Action"]))
        for arn in _as_list(item.get("Resource", []))
        if arn not in own
    ]


def database_connect_names_one_user(mocks: RecordingMocks) -> list[str]:
    """``rds-db:connect`` names one database user of one cluster, by resource id: no wildcard."""
    return [
        f"{resource.name}: statement {item.get('Sid')} allows rds-db:connect on {arn!r}"
        for resource, item in statements(mocks)
        if item["Effect"] == "Allow" and "rds-db:connect" in _as_list(item["Action"])
        for arn in _as_list(item.get("Resource", []))
        if not _DB_USER_ARN.match(arn)
    ]


def invocations_name_functions_of_this_stack(mocks: RecordingMocks) -> list[str]:
    """``lambda:InvokeFunction`` names functions of this stack by ARN, never a pattern."""
    functions = {f.outputs["arn"] for f in mocks.of_type("aws:lambda/function:Function")}
    return [
        f"{resource.name}: statement {item.get('Sid')} allows lambda:InvokeFunction on {arn!r}"
        for resource, item in statements(mocks)
        if item["Effect"] == "Allow" and "lambda:InvokeFunction" in _as_list(item["Action"])
        for arn in _as_list(item.get("Resource", []))
        if arn not in functions
    ]


def secret_reads_and_email_sends_name_their_resources(mocks: RecordingMocks) -> list[str]:
    """``secretsmanager:GetSecretValue`` names secrets by ARN, a wildcard only as a trailing
    ``/*`` under a folder at least three levels deep (``micro-agent/<stack>/tenants/*``); SES
    sends name identities and configuration sets by ARN, no wildcard at all."""
    problems: list[str] = []
    for resource, item in statements(mocks):
        if item["Effect"] != "Allow":
            continue
        actions = set(_as_list(item["Action"]))
        for arn in _as_list(item.get("Resource", [])):
            if "secretsmanager:GetSecretValue" in actions and not _SECRET_READ.match(arn):
                problems.append(
                    f"{resource.name}: statement {item.get('Sid')} reads secrets {arn!r}"
                )
            if actions & SES_SEND_ACTIONS and not _SES_SEND_RESOURCE.match(arn):
                problems.append(
                    f"{resource.name}: statement {item.get('Sid')} sends email as {arn!r}"
                )
    return problems


def service_grants_are_scoped_to_this_account(mocks: RecordingMocks) -> list[str]:
    """A key, topic or bucket policy that lets an AWS service in requires ``aws:SourceAccount``
    (so another account's alarm or configuration set cannot use it: the confused deputy)."""
    return [
        f"{resource.name}: statement {item.get('Sid')} lets {item['Principal']['Service']} in "
        "from any account"
        for resource, item in statements(mocks)
        if resource.type in RESOURCE_POLICIES
        and item["Effect"] == "Allow"
        and isinstance(item.get("Principal"), dict)
        and "Service" in item["Principal"]
        and not any(
            key.lower() == "aws:sourceaccount"
            for operator in (item.get("Condition") or {}).values()
            for key in operator
        )
    ]


def buckets_are_private_encrypted_versioned_tls_only(mocks: RecordingMocks) -> list[str]:
    """Each bucket: all four public-access blocks, encryption, versioning, TLS-only, lifecycle."""
    problems: list[str] = []
    for bucket in mocks.of_type("aws:s3/bucket:Bucket"):
        bucket_id = f"{bucket.name}-id"

        def attached(token: str, bucket_id: str = bucket_id) -> list[Resource]:
            return [r for r in mocks.of_type(token) if r.inputs.get("bucket") == bucket_id]

        blocks = attached("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
        flags = (
            "blockPublicAcls",
            "blockPublicPolicy",
            "ignorePublicAcls",
            "restrictPublicBuckets",
        )
        if not blocks or not all(blocks[0].inputs.get(flag) is True for flag in flags):
            problems.append(f"{bucket.name}: public access not fully blocked")
        encryption = attached(
            "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
        )
        if not encryption or not encryption[0].inputs["rules"][0][
            "applyServerSideEncryptionByDefault"
        ]["sseAlgorithm"].startswith("aws:kms"):
            problems.append(f"{bucket.name}: no KMS default encryption")
        versioning = attached("aws:s3/bucketVersioning:BucketVersioning")
        if not versioning or versioning[0].inputs["versioningConfiguration"]["status"] != "Enabled":
            problems.append(f"{bucket.name}: versioning not enabled")
        lifecycle = attached("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
        if not lifecycle or not any(
            rule.get("noncurrentVersionExpiration") and rule.get("status") == "Enabled"
            for rule in lifecycle[0].inputs["rules"]
        ):
            problems.append(f"{bucket.name}: no rule expiring noncurrent versions")
        policies = attached("aws:s3/bucketPolicy:BucketPolicy")
        denies_plain_http = any(
            item["Effect"] == "Deny"
            and item.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
            for policy in policies
            for item in json.loads(policy.inputs["policy"])["Statement"]
        )
        if not denies_plain_http:
            problems.append(f"{bucket.name}: bucket policy does not deny non-TLS requests")
    return problems


def _alarm_topics(mocks: RecordingMocks) -> set[str]:
    return {
        arn
        for alarm in mocks.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
        for arn in alarm.inputs.get("alarmActions") or []
    }


def _ses_event_topics(mocks: RecordingMocks) -> set[str]:
    return {
        destination.inputs["eventDestination"]["snsDestination"]["topicArn"]
        for destination in mocks.of_type(
            "aws:sesv2/configurationSetEventDestination:ConfigurationSetEventDestination"
        )
        if (destination.inputs.get("eventDestination") or {}).get("snsDestination")
    }


def topics_use_a_rotated_customer_key_their_publishers_can_use(
    mocks: RecordingMocks,
) -> list[str]:
    """Topics are encrypted with a rotating CMK of this stack (not alias/aws/sns, whose policy
    cannot let a service in), and its policy lets in the services that publish to the topic:
    CloudWatch where an alarm notifies it, SES where a configuration set's events go to it."""
    problems: list[str] = []
    keys = {k.outputs["arn"]: k for k in mocks.of_type("aws:kms/key:Key")}
    publishers = {
        "cloudwatch.amazonaws.com": _alarm_topics(mocks),
        "ses.amazonaws.com": _ses_event_topics(mocks),
    }
    for topic in mocks.of_type("aws:sns/topic:Topic"):
        key_ref = topic.inputs.get("kmsMasterKeyId", "")
        key = keys.get(key_ref)
        if key is None:
            problems.append(f"{topic.name}: not encrypted with a key of this stack ({key_ref!r})")
            continue
        if key.inputs.get("enableKeyRotation") is not True:
            problems.append(f"{key.name}: key rotation is off")
        key_statements = json.loads(key.inputs.get("policy", '{"Statement": []}'))["Statement"]
        for service, topics in publishers.items():
            may_use = any(
                item["Effect"] == "Allow"
                and service in _principals(item)
                and {"kms:GenerateDataKey", "kms:Decrypt"} <= set(_as_list(item["Action"]))
                for item in key_statements
            )
            if topic.outputs["arn"] in topics and not may_use:
                problems.append(
                    f"{key.name}: {service} publishes to {topic.name} but may not use its key"
                )
    return problems


def alarms_notify_the_alerts_topic(mocks: RecordingMocks) -> list[str]:
    """Every alarm has an alerts topic of this stack among its alarm actions (a topic that
    SES events go to is not one)."""
    topics = {t.outputs["arn"] for t in mocks.of_type("aws:sns/topic:Topic")}
    topics -= _ses_event_topics(mocks)
    return [
        f"{alarm.name}: alarm actions {alarm.inputs.get('alarmActions')} miss the alerts topic"
        for alarm in mocks.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
        if not topics & set(alarm.inputs.get("alarmActions") or [])
    ]


def functions_have_logs_async_config_and_vpc(mocks: RecordingMocks) -> list[str]:
    """Each function: own log group with retention, VPC in 2+ subnets, reserved concurrency,
    explicit async retries and event age with an on-failure destination."""
    problems: list[str] = []
    for function in mocks.of_type("aws:lambda/function:Function"):
        name = function.inputs.get("name")
        groups = [
            g
            for g in mocks.of_type("aws:cloudwatch/logGroup:LogGroup")
            if g.inputs.get("name") == f"/aws/lambda/{name}"
        ]
        if not groups or not groups[0].inputs.get("retentionInDays"):
            problems.append(f"{name}: no log group with retention")
        vpc = function.inputs.get("vpcConfig") or {}
        if len(vpc.get("subnetIds") or []) < 2 or not vpc.get("securityGroupIds"):
            problems.append(f"{name}: not in a VPC with two subnets and a security group")
        if not function.inputs.get("reservedConcurrentExecutions"):
            problems.append(f"{name}: no reserved concurrency")
        configs = [
            c
            for c in mocks.of_type("aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig")
            if c.inputs.get("functionName") == name
        ]
        if not configs:
            problems.append(f"{name}: no explicit async invoke config")
            continue
        config = configs[0].inputs
        if "maximumRetryAttempts" not in config or "maximumEventAgeInSeconds" not in config:
            problems.append(f"{name}: async retries or event age left to defaults")
        destination = (config.get("destinationConfig") or {}).get("onFailure", {})
        if ":sns:" not in str(destination.get("destination", "")):
            problems.append(f"{name}: async failures go nowhere")
    return problems


def _taggable(token: str) -> bool:
    package, module_path, name = token.split(":")
    if package != "aws":
        return False
    module = importlib.import_module(
        "pulumi_aws."
        + ("lambda_" if module_path.split("/")[0] == "lambda" else module_path.split("/")[0])
    )
    cls = getattr(module, name, None)
    return cls is not None and hasattr(cls, "tags")


def taggable_resources_carry_project_stack_service(mocks: RecordingMocks) -> list[str]:
    """Every resource type that takes tags gets project, stack and service."""
    return [
        f"{resource.type} {resource.name}: tags {resource.inputs.get('tags')}"
        for resource in mocks.resources
        if _taggable(resource.type)
        and not all((resource.inputs.get("tags") or {}).get(tag) for tag in REQUIRED_TAGS)
    ]


def roles_hold_only_what_their_function_needs(mocks: RecordingMocks) -> list[str]:
    """Role policies grant only: log writes, the database (a secret or IAM authentication as
    one user), the alerts topic and key, VPC network interfaces, (schedulers) invocation, and
    (live dispatch) reading its secrets and sending email through SES."""
    allowed = {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "secretsmanager:GetSecretValue",
        "rds-db:connect",
        "sns:Publish",
        "kms:GenerateDataKey",
        "kms:Decrypt",
        "lambda:InvokeFunction",
        *SES_SEND_ACTIONS,
        *LAMBDA_VPC_NETWORK_INTERFACE_ACTIONS,
    }
    problems: list[str] = []
    for resource, item in statements(mocks):
        if resource.type != "aws:iam/rolePolicy:RolePolicy":
            continue
        extra = set(_as_list(item["Action"])) - allowed
        if extra:
            problems.append(f"{resource.name}: grants {sorted(extra)}")
    return problems


CHECKS: dict[str, Check] = {
    check.__name__: check
    for check in (
        allow_has_no_wildcard_principal,
        allow_has_no_wildcard_action,
        identity_policies_name_their_resources,
        roles_have_no_managed_policies,
        log_writes_name_their_own_log_group,
        database_connect_names_one_user,
        invocations_name_functions_of_this_stack,
        secret_reads_and_email_sends_name_their_resources,
        service_grants_are_scoped_to_this_account,
        buckets_are_private_encrypted_versioned_tls_only,
        topics_use_a_rotated_customer_key_their_publishers_can_use,
        alarms_notify_the_alerts_topic,
        functions_have_logs_async_config_and_vpc,
        taggable_resources_carry_project_stack_service,
        roles_hold_only_what_their_function_needs,
    )
}
