"""Which service function answers which API action. Adding an action is one line here plus the
function; parsing and serializing come from botocore's models."""

from vmimport.service import ebs_direct, images, imports, register_image, tags

EC2_ACTIONS = {
    "ImportImage": imports.import_image,
    "DescribeImportImageTasks": imports.describe_import_image_tasks,
    "ImportSnapshot": imports.import_snapshot,
    "DescribeImportSnapshotTasks": imports.describe_import_snapshot_tasks,
    "CancelImportTask": imports.cancel_import_task,
    "DescribeImages": images.describe_images,
    "DeregisterImage": images.deregister_image,
    "RegisterImage": register_image.register_image,
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
