"""infra/template.yaml: cfn-lint clean, and the properties the design depends on are really there."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mediasearch.aws import sagemaker as sm
from mediasearch.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "infra" / "template.yaml"


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !Sub, ...) read as their long forms."""


def _tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _tag)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)


def resources(template: dict, kind: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def statements(template: dict) -> list[dict]:
    out = []
    for role in resources(template, "AWS::IAM::Role").values():
        for policy in role["Properties"].get("Policies", []):
            out += policy["PolicyDocument"]["Statement"]
    return out


def test_cfn_lint_passes() -> None:
    exe = shutil.which("cfn-lint") or str(Path(sys.executable).parent / "cfn-lint")
    proc = subprocess.run([exe, str(TEMPLATE)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_fits_create_stack_template_body() -> None:
    assert len(TEMPLATE.read_bytes()) < 51_200  # larger templates must go through S3


def test_bucket_is_private_encrypted_and_expires_intermediates(template: dict) -> None:
    (bucket,) = resources(template, "AWS::S3::Bucket").values()
    props = bucket["Properties"]
    sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert sse["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert (
        all(props["PublicAccessBlockConfiguration"].values())
        and len(props["PublicAccessBlockConfiguration"]) == 4
    )
    rules = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    outputs_rule = rules["expire-transform-outputs"]
    assert outputs_rule["Prefix"] == {"Fn::Sub": "${MediaPrefix}/_mediasearch/outputs/"}
    assert outputs_rule["ExpirationInDays"] == {"Ref": "IntermediateExpirationDays"}
    (policy,) = resources(template, "AWS::S3::BucketPolicy").values()
    (deny,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_opensearch_domain(template: dict) -> None:
    (domain,) = resources(template, "AWS::OpenSearchService::Domain").values()
    props = domain["Properties"]
    assert props["EngineVersion"].startswith("OpenSearch_2.")
    assert props["EncryptionAtRestOptions"] == {"Enabled": True}
    assert props["NodeToNodeEncryptionOptions"] == {"Enabled": True}
    assert props["DomainEndpointOptions"]["EnforceHTTPS"] is True
    assert props["ClusterConfig"]["InstanceType"] == {"Ref": "OpenSearchInstanceType"}
    (statement,) = props["AccessPolicies"]["Statement"]
    principals = statement["Principal"]["AWS"]
    assert "*" not in principals and {"Fn::GetAtt": ["QueryFunctionRole", "Arn"]} in principals
    assert statement["Resource"]["Fn::Sub"].endswith(":domain/${DomainName}/*")


def test_iam_is_least_privilege(template: dict) -> None:
    for st in statements(template):
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        assert st["Effect"] == "Allow"
        assert not any(a == "*" or a.endswith(":*") for a in actions), st
        if st["Resource"] == "*":
            # Only actions with no resource-level permissions, and metrics only in SageMaker's namespace.
            assert set(actions) <= {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"}, st
            if "cloudwatch:PutMetricData" in actions:
                assert "Condition" in st
    by_sid = {st["Sid"]: st for st in statements(template)}
    assert by_sid["EncodeQueries"]["Resource"]["Fn::Sub"].endswith(":endpoint/${EndpointName}")
    assert by_sid["SearchIndex"]["Action"] == ["es:ESHttpGet", "es:ESHttpPost", "es:ESHttpHead"]
    assert by_sid["WriteTransformOutputs"]["Resource"] == {
        "Fn::Sub": "${MediaBucket.Arn}/${MediaPrefix}/_mediasearch/outputs/*"
    }
    assert by_sid["ListMediaPrefix"]["Condition"]["StringLike"]["s3:prefix"]


def test_sagemaker_model_and_serverless_endpoint(template: dict) -> None:
    model = template["Resources"]["ClipModel"]["Properties"]
    assert model["PrimaryContainer"]["ModelDataUrl"] == {"Ref": "ModelDataUrl"}
    assert model["PrimaryContainer"]["Environment"]["SAGEMAKER_PROGRAM"] == "inference.py"
    default_image = model["PrimaryContainer"]["Image"]["Fn::If"][2]["Fn::Sub"]
    assert default_image.endswith(sm.PYTORCH_INFERENCE_TAG["cpu"])  # same DLC as the launcher
    variant = template["Resources"]["ClipEndpointConfig"]["Properties"]["ProductionVariants"][0]
    assert variant["ServerlessConfig"] == {
        "MemorySizeInMB": {"Ref": "EndpointMemoryMB"},
        "MaxConcurrency": {"Ref": "EndpointMaxConcurrency"},
    }
    assert "CaptionerModel" in template["Resources"]


def test_query_lambda_is_an_image_behind_an_http_api(template: dict) -> None:
    fn = template["Resources"]["QueryFunction"]["Properties"]
    assert fn["PackageType"] == "Image" and fn["Code"] == {"ImageUri": {"Ref": "QueryImageUri"}}
    env = fn["Environment"]["Variables"]
    fields = set(Settings.model_fields)
    for name in env:
        # Every variable the function gets must be a setting the app reads.
        assert name.startswith("MEDIASEARCH_") and name.removeprefix("MEDIASEARCH_").lower() in fields, name
    assert env["MEDIASEARCH_INDEX_BACKEND"] == "opensearch"
    assert env["MEDIASEARCH_ENCODER_BACKEND"] == "sagemaker"
    assert env["MEDIASEARCH_OPENSEARCH_AWS_REGION"] == {"Ref": "AWS::Region"}
    assert fn["LoggingConfig"]["LogGroup"] == {"Ref": "QueryLogGroup"}
    api = template["Resources"]["HttpApi"]["Properties"]
    assert api["ProtocolType"] == "HTTP"
    integration = template["Resources"]["HttpApiIntegration"]["Properties"]
    assert integration["PayloadFormatVersion"] == "2.0"  # what tests/test_query_lambda.py sends


def test_log_groups_have_retention(template: dict) -> None:
    groups = resources(template, "AWS::Logs::LogGroup")
    assert len(groups) >= 3
    assert all(g["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"} for g in groups.values())


def test_parameters_and_the_outputs_the_cli_reads(template: dict) -> None:
    params = template["Parameters"]
    for name in ("OpenSearchInstanceType", "OpenSearchInstanceCount", "OpenSearchVolumeGiB"):
        assert name in params
    for name in ("EndpointMemoryMB", "EndpointMaxConcurrency", "LambdaMemoryMB"):
        assert name in params
    outputs = template["Outputs"]
    # `mediasearch aws ... --stack` reads these names.
    for name in ("BucketName", "ModelDataUrl", "SageMakerRoleArn", "OpenSearchUrl", "QueryEndpointName"):
        assert name in outputs
    assert outputs["SearchUrl"]["Value"] == {"Fn::GetAtt": ["HttpApi", "ApiEndpoint"]}
    assert "QueryImageRepositoryUri" in outputs
