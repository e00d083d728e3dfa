"""Which service function answers which API action. Adding an action is one line here plus the
function; parsing and serializing come from botocore's models."""

from vmimport.service import (account, attributes, copy_image, ebs_direct, exports, iam, images,
                              imports, kms_api, register_image, s3_api, s3_copy, s3_store_api,
                              sts, tags, task_detail)

EC2_ACTIONS = {
    "ImportImage": imports.import_image,
    "DescribeImportImageTasks": imports.describe_import_image_tasks,
    "ImportSnapshot": imports.import_snapshot,
    "DescribeImportSnapshotTasks": imports.describe_import_snapshot_tasks,
    "CancelImportTask": imports.cancel_import_task,
    "ExportImage": exports.export_image,
    "DescribeExportImageTasks": exports.describe_export_image_tasks,
    "CancelExportTask": exports.cancel_export_task,
    "DescribeImages": images.describe_images,
    "DeregisterImage": images.deregister_image,
    "RegisterImage": register_image.register_image,
    "CopyImage": copy_image.copy_image,
    "DescribeSnapshots": images.describe_snapshots,
    "DeleteSnapshot": images.delete_snapshot,
    "CreateTags": tags.create_tags,
    "DeleteTags": tags.delete_tags,
    "DescribeTags": tags.describe_tags,
    "DescribeImageAttribute": attributes.describe_image_attribute,
    "ModifyImageAttribute": attributes.modify_image_attribute,
    "ResetImageAttribute": attributes.reset_image_attribute,
    "DescribeSnapshotAttribute": attributes.describe_snapshot_attribute,
    "ModifySnapshotAttribute": attributes.modify_snapshot_attribute,
    "ResetSnapshotAttribute": attributes.reset_snapshot_attribute,
    "EnableImageDeregistrationProtection": attributes.enable_image_deregistration_protection,
    "DisableImageDeregistrationProtection": attributes.disable_image_deregistration_protection,
    "EnableImageDeprecation": attributes.enable_image_deprecation,
    "DisableImageDeprecation": attributes.disable_image_deprecation,
    "DescribeRegions": account.describe_regions,
    "DescribeAvailabilityZones": account.describe_availability_zones,
    "DescribeAccountAttributes": account.describe_account_attributes,
    "DescribeConversionTasks": account.describe_conversion_tasks,
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

STS_ACTIONS = {
    "GetCallerIdentity": sts.get_caller_identity,
    "GetSessionToken": sts.get_session_token,
    "AssumeRole": sts.assume_role,
}

KMS_ACTIONS = {
    "CreateKey": kms_api.create_key,
    "DescribeKey": kms_api.describe_key,
    "ListKeys": kms_api.list_keys,
    "CreateAlias": kms_api.create_alias,
    "UpdateAlias": kms_api.update_alias,
    "DeleteAlias": kms_api.delete_alias,
    "ListAliases": kms_api.list_aliases,
    "EnableKey": kms_api.enable_key,
    "DisableKey": kms_api.disable_key,
    "ScheduleKeyDeletion": kms_api.schedule_key_deletion,
    "CancelKeyDeletion": kms_api.cancel_key_deletion,
    "GenerateDataKey": kms_api.generate_data_key_api,
    "Encrypt": kms_api.encrypt,
    "Decrypt": kms_api.decrypt,
}

S3_ACTIONS = {
    "ListBuckets": s3_api.list_buckets,
    "CreateBucket": s3_api.create_bucket,
    "HeadBucket": s3_api.head_bucket,
    "DeleteBucket": s3_api.delete_bucket,
    "GetBucketLocation": s3_api.get_bucket_location,
}
# An object operation goes to its bucket's home: this data dir (s3_api, s3_copy), or the object
# store that holds the block store (s3_store_api).
for _name, _local in {
        "ListObjects": s3_api.list_objects, "ListObjectsV2": s3_api.list_objects_v2,
        "PutObject": s3_api.put_object, "GetObject": s3_api.get_object,
        "HeadObject": s3_api.head_object, "DeleteObject": s3_api.delete_object,
        "DeleteObjects": s3_api.delete_objects, "CopyObject": s3_copy.copy_object,
        "UploadPartCopy": s3_copy.upload_part_copy,
        "CreateMultipartUpload": s3_api.create_multipart_upload,
        "UploadPart": s3_api.upload_part,
        "CompleteMultipartUpload": s3_api.complete_multipart_upload,
        "AbortMultipartUpload": s3_api.abort_multipart_upload,
        "ListParts": s3_api.list_parts,
        "ListMultipartUploads": s3_api.list_multipart_uploads}.items():
    S3_ACTIONS[_name] = s3_store_api.dispatch(_local, getattr(s3_store_api, _local.__name__))

# vmimport's own calls (api/service_models/vmimport): what EC2's shapes have no room for.
VMIMPORT_ACTIONS = {
    "DescribeImportTaskDetail": task_detail.describe_import_task_detail,
    "EndSession": sts.end_session,
}
