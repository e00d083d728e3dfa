"""Which service function answers which API action. Adding an action is one line here plus the
function; parsing and serializing come from botocore's models."""

from vmimport.service import (copy_image, ebs_direct, iam, images, imports, kms, register_image,
                              tags)

EC2_ACTIONS = {
    "ImportImage": imports.import_image,
    "DescribeImportImageTasks": imports.describe_import_image_tasks,
    "ImportSnapshot": imports.import_snapshot,
    "DescribeImportSnapshotTasks": imports.describe_import_snapshot_tasks,
    "CancelImportTask": imports.cancel_import_task,
    "DescribeImages": images.describe_images,
    "DeregisterImage": images.deregister_image,
    "RegisterImage": register_image.register_image,
    "CopyImage": copy_image.copy_image,
    "DescribeSnapshots": images.describe_snapshots,
    "DeleteSnapshot": images.delete_snapshot,
    "CreateTags": tags.create_tags,
    "DeleteTags": tags.delete_tags,
    "DescribeTags": tags.describe_tags,
}

EBS_ACTIONS = {
    "ListSnapshotBlocks": ebs_direct.list_snapshot_blocks,
    "GetSnapshotBlock": ebs_direct.get_snapshot_block,
}

IAM_ACTIONS = {
    "CreateRole": iam.create_role,
    "GetRole": iam.get_role,
    "ListRoles": iam.list_roles,
    "DeleteRole": iam.delete_role,
    "UpdateAssumeRolePolicy": iam.update_assume_role_policy,
    "PutRolePolicy": iam.put_role_policy,
    "GetRolePolicy": iam.get_role_policy,
    "ListRolePolicies": iam.list_role_policies,
    "DeleteRolePolicy": iam.delete_role_policy,
}

KMS_ACTIONS = {
    "CreateKey": kms.create_key,
    "DescribeKey": kms.describe_key,
    "ListKeys": kms.list_keys,
    "CreateAlias": kms.create_alias,
    "UpdateAlias": kms.update_alias,
    "DeleteAlias": kms.delete_alias,
    "ListAliases": kms.list_aliases,
    "EnableKey": kms.enable_key,
    "DisableKey": kms.disable_key,
    "ScheduleKeyDeletion": kms.schedule_key_deletion,
    "CancelKeyDeletion": kms.cancel_key_deletion,
    "GenerateDataKey": kms.generate_data_key_api,
    "Encrypt": kms.encrypt,
    "Decrypt": kms.decrypt,
}
