"""Packer 1.6.6 (Debian's package), whose amazon-import post-processor uploads the disk to S3 in
virtual-hosted style on the EC2 endpoint it is given, imports it, then copies the AMI under its
ami_name: through to a registered AMI on a live server. ``<bucket>.localhost`` must resolve to
the server, so packer runs in a mount namespace of its own whose /etc/hosts says so (the
README's step for people is one line in /etc/hosts); that needs root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from ..helpers import Server

pytestmark = [pytest.mark.slow]
BUCKET = "packer-imports"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving packer a hosts file of its own "
                    "(unshare --mount) needs root")
@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "ami_encrypt"])
def test_packer_amazon_import_registers_an_ami(tmp_path, disks, encrypt):
    packer = shutil.which("packer")
    assert packer, "packer is missing: scripts/setup --test installs it (scripts/test-packages)"
    srv = Server(tmp_path / "data").start()
    try:
        srv.client("s3").create_bucket(Bucket=BUCKET)
        (tmp_path / "hosts").write_text(open("/etc/hosts").read()
                                        + f"\n127.0.0.1 {BUCKET}.localhost\n")
        template = {
            "builders": [{"type": "file", "source": str(disks["raw"]),
                          "target": str(tmp_path / "disk.raw")}],
            "post-processors": [{
                "type": "amazon-import", "access_key": "test", "secret_key": "test",
                "region": "us-east-1", "custom_endpoint_ec2": f"http://localhost:{srv.port}",
                "s3_bucket_name": BUCKET, "format": "raw", "license_type": "BYOL",
                "ami_name": "packer-{{timestamp}}", "ami_description": "made by packer",
                "ami_users": ["111111111111"], "skip_clean": True,
                **({"ami_encrypt": True} if encrypt else {})}]}
        (tmp_path / "template.json").write_text(json.dumps(template))
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update(HOME=str(tmp_path), CHECKPOINT_DISABLE="1", PACKER_CACHE_DIR=str(tmp_path))
        proc = subprocess.run(
            ["unshare", "--mount", "sh", "-c", f'mount --bind "{tmp_path}/hosts" /etc/hosts && '
             f'exec "{packer}" build -machine-readable template.json'],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        artifact = [line.split(",")[-1] for line in proc.stdout.splitlines()
                    if ",artifact,0,id," in line]
        assert artifact and artifact[0].startswith("us-east-1:ami-"), proc.stdout[-2000:]
        image_id = artifact[0].split(":", 1)[1]
        image = srv.client("ec2").describe_images(ImageIds=[image_id])["Images"][0]
        assert image["State"] == "available" and image["Name"].startswith("packer-")
        assert image["PlatformDetails"] == "Linux/UNIX"  # inspected: the disk's Ubuntu
        assert image["Description"] == "made by packer"  # ami_description
        permissions = srv.client("ec2").describe_image_attribute(
            ImageId=image_id, Attribute="launchPermission")["LaunchPermissions"]
        assert permissions == [{"UserId": "111111111111"}]  # ami_users
        # ami_encrypt: the copy Packer makes is sealed under the account's default EBS key
        assert [m["Ebs"]["Encrypted"] for m in image["BlockDeviceMappings"]] == [encrypt]
    finally:
        srv.stop()
