"""``vmimport import/export/tasks/images/snapshots``: a client of the public API (EC2 and S3
through boto3), usable against this server or AWS itself. Nothing here reaches into the
service or the database: what a user can do, the API must offer."""
