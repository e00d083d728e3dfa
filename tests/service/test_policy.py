"""IAM policy evaluation: Allow needed, explicit Deny wins, wildcards, Not*, conditions, trust."""

import json

import pytest

from vmimport.service import policy

# AWS's documented role-policy.json for vmimport (VM Import/Export User Guide), verbatim.
ROLE_POLICY = """{
   "Version":"2012-10-17",
   "Statement":[
      {
         "Effect": "Allow",
         "Action": [
            "s3:GetBucketLocation",
            "s3:GetObject",
            "s3:ListBucket"
         ],
         "Resource": [
            "arn:aws:s3:::disk-image-file-bucket",
            "arn:aws:s3:::disk-image-file-bucket/*"
         ]
      },
      {
         "Effect": "Allow",
         "Action": [
            "ec2:ModifySnapshotAttribute",
            "ec2:CopySnapshot",
            "ec2:RegisterImage",
            "ec2:Describe*"
         ],
         "Resource": "*"
      }
   ]
}"""
TRUST_POLICY = """{
   "Version": "2012-10-17",
   "Statement": [
      {
         "Effect": "Allow",
         "Principal": { "Service": "vmie.amazonaws.com" },
         "Action": "sts:AssumeRole",
         "Condition": {
            "StringEquals":{
               "sts:Externalid": "vmimport"
            }
         }
      }
   ]
}"""


def allowed(doc, action, resource, context=None):
    return policy.evaluate([("p", doc if isinstance(doc, dict) else policy.parse(doc))],
                           action, resource, context).allowed


def stmt(effect="Allow", **kw):
    return {"Version": "2012-10-17", "Statement": [{"Effect": effect, **kw}]}


def test_documented_role_policy():
    assert allowed(ROLE_POLICY, "s3:GetObject", "arn:aws:s3:::disk-image-file-bucket/a/b.vmdk")
    assert allowed(ROLE_POLICY, "s3:ListBucket", "arn:aws:s3:::disk-image-file-bucket")
    assert allowed(ROLE_POLICY, "S3:getobject", "arn:aws:s3:::disk-image-file-bucket/x")
    assert not allowed(ROLE_POLICY, "s3:GetObject", "arn:aws:s3:::other-bucket/x")
    assert not allowed(ROLE_POLICY, "s3:PutObject", "arn:aws:s3:::disk-image-file-bucket/x")
    assert not allowed(ROLE_POLICY, "kms:Decrypt", "arn:aws:kms:us-east-1:1:key/x")


def test_explicit_deny_wins_and_reason():
    doc = {"Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
        {"Sid": "NoSecrets", "Effect": "Deny", "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::b/secret/*"}]}
    assert allowed(doc, "s3:GetObject", "arn:aws:s3:::b/public/x")
    decision = policy.evaluate([("mine", doc)], "s3:GetObject", "arn:aws:s3:::b/secret/x")
    assert not decision.allowed and "policy 'mine' statement NoSecrets" in decision.reason


@pytest.mark.parametrize("pattern, value, hit", [
    ("arn:aws:s3:::b?ck/*", "arn:aws:s3:::buck/k", True),
    ("arn:aws:s3:::b?ck/*", "arn:aws:s3:::bck/k", False),
    ("arn:aws:s3:::b/*.vmdk", "arn:aws:s3:::b/dir/x.vmdk", True),
    ("arn:aws:s3:::B/*", "arn:aws:s3:::b/x", False),   # resources are case-sensitive
    ("arn:aws:s3:::b[1]", "arn:aws:s3:::b1", False),   # no character classes in IAM
])
def test_resource_wildcards(pattern, value, hit):
    assert allowed(stmt(Action="s3:GetObject", Resource=pattern), "s3:GetObject", value) is hit


def test_not_action_and_not_resource():
    doc = stmt(NotAction=["s3:Put*", "s3:Delete*"], Resource="*")
    assert allowed(doc, "s3:GetObject", "arn:aws:s3:::b/k")
    assert not allowed(doc, "s3:PutObject", "arn:aws:s3:::b/k")
    doc = stmt(Action="s3:*", NotResource="arn:aws:s3:::private*")
    assert allowed(doc, "s3:GetObject", "arn:aws:s3:::public/k")
    assert not allowed(doc, "s3:GetObject", "arn:aws:s3:::private-bucket/k")
    deny = {"Statement": [stmt(Action="*", Resource="*")["Statement"][0],
                          {"Effect": "Deny", "NotAction": "s3:Get*", "Resource": "*"}]}
    assert allowed(deny, "s3:GetObject", "arn:aws:s3:::b/k")
    assert not allowed(deny, "s3:ListBucket", "arn:aws:s3:::b")


def test_conditions():
    doc = stmt(Action="*", Resource="*", Condition={"StringEquals": {"aws:SourceAccount": "1"}})
    assert allowed(doc, "s3:GetObject", "r", {"aws:sourceaccount": "1"})
    assert not allowed(doc, "s3:GetObject", "r", {"aws:SourceAccount": "2"})
    assert not allowed(doc, "s3:GetObject", "r", {})  # a missing key fails a positive operator
    neg = stmt(Action="*", Resource="*", Condition={"StringNotEquals": {"k": "x"}})
    assert allowed(neg, "a:b", "r", {})
    exists = stmt(Action="*", Resource="*", Condition={"StringEqualsIfExists": {"k": "x"}})
    assert allowed(exists, "a:b", "r", {}) and not allowed(exists, "a:b", "r", {"k": "y"})
    unknown = stmt(Action="*", Resource="*", Condition={"NumericLessThan": {"k": "1"}})
    assert not allowed(unknown, "a:b", "r", {"k": "0"})


def test_trust_policy():
    ctx = {"sts:ExternalId": "vmimport", "aws:SourceAccount": "111111111111",
           "aws:SourceArn": "arn:aws:vmie:us-east-1:111111111111:import-task"}
    assert policy.trust_decision(policy.parse(TRUST_POLICY, trust=True),
                                 "vmie.amazonaws.com", ctx).allowed
    other = json.loads(TRUST_POLICY)
    other["Statement"][0]["Principal"] = {"Service": "ec2.amazonaws.com"}
    d = policy.trust_decision(other, "vmie.amazonaws.com", ctx)
    assert not d.allowed and "does not allow vmie.amazonaws.com" in d.reason
    wrong_id = json.loads(TRUST_POLICY)
    wrong_id["Statement"][0]["Condition"]["StringEquals"]["sts:Externalid"] = "other"
    d = policy.trust_decision(wrong_id, "vmie.amazonaws.com", ctx)
    assert not d.allowed and "Condition is not met" in d.reason
    documented_extra = json.loads(TRUST_POLICY)
    documented_extra["Statement"][0]["Condition"].update({
        "StringEquals": {"sts:Externalid": "vmimport", "aws:SourceAccount": "111111111111"},
        "ArnLike": {"aws:SourceArn": "arn:aws:vmie:*:111111111111:*"}})
    assert policy.trust_decision(documented_extra, "vmie.amazonaws.com", ctx).allowed


@pytest.mark.parametrize("doc, trust", [
    ("not json", False), ("[]", False), ('{"Version": "2012-10-17"}', False),
    ('{"Statement": [{"Effect": "Maybe", "Action": "*", "Resource": "*"}]}', False),
    ('{"Statement": [{"Effect": "Allow", "Action": "*"}]}', False),
    (TRUST_POLICY, False),     # a Principal in a permission policy
    (ROLE_POLICY, True),       # no Principal in a trust policy
])
def test_malformed(doc, trust):
    with pytest.raises(policy.PolicyError):
        policy.parse(doc, trust=trust)
