"""`vmimport gc` removes S3 uploads nothing has touched for s3_abandoned_upload_days, and only
those: parts of an upload still in progress stay."""

from __future__ import annotations

import os
import subprocess
import time

from vmimport.service import s3_multipart
from vmimport.service.bucket_files import UPLOAD_AREA, open_bucket

from ..helpers import BIN


class _Body(list):
    md5_hex = "0" * 32


def _upload(buckets, bucket: str, key: str) -> str:
    fd = open_bucket(buckets, bucket)
    try:
        upload_id = s3_multipart.create(fd, bucket, key, None, None)
        s3_multipart.upload_part(fd, upload_id, key, 1, _Body(), _Body([b"x" * 1000]))
        return upload_id
    finally:
        os.close(fd)


def _age(path, days: float) -> None:
    when = time.time() - days * 86400
    for entry in [path, *path.iterdir()] if path.is_dir() else [path]:
        os.utime(entry, (when, when), follow_symlinks=False)


def test_gc_removes_only_abandoned_uploads(tmp_path):
    data = tmp_path / "data"
    buckets = data / "buckets"
    (buckets / "bkt").mkdir(parents=True)
    old = _upload(buckets, "bkt", "old")
    young = _upload(buckets, "bkt", "young")
    area = buckets / "bkt" / UPLOAD_AREA
    (area / "tmp-cut-off-put").write_bytes(b"y" * 500)
    _age(area / old, 8)
    _age(area / "tmp-cut-off-put", 8)
    gc = subprocess.run([str(BIN / "vmimport"), "gc", "--data-dir", str(data)],
                        capture_output=True, text=True, timeout=120)
    assert gc.returncode == 0, gc.stderr
    assert "removed 2 abandoned S3 upload(s) older than 7 days" in gc.stdout
    assert sorted(os.listdir(area)) == [young]
    assert len(os.listdir(area / young)) == 2  # upload.json and its part
