"""The bucket the object-store tests keep blocks in (created by conftest's ``s3``)."""

BUCKET = "blocks"
