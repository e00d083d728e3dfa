"""Ansible's amazon.aws collection (bundled by the ``ansible`` package) against a live server:
ec2_snapshot_info (which asks DescribeSnapshotAttribute for every snapshot), ec2_ami_info with
describe_image_attributes, and ec2_ami registering an AMI from a snapshot and deregistering it.
Run as ``ansible-playbook`` subprocesses, as users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from ..helpers import BIN
from .ami_fixtures import new_ami

pytestmark = pytest.mark.slow


def _play(server, tmp_path, tasks: list[dict]) -> dict:
    """Run ``tasks`` on localhost; return each registered result by its ``register`` name."""
    connection = {"endpoint_url": server.endpoint, "access_key": "test", "secret_key": "test",
                  "region": "us-east-1"}
    for task in tasks:
        module = next(k for k in task if k.startswith("amazon.aws."))
        task[module] = {**connection, **task[module]}
    registered = [t["register"] for t in tasks]
    tasks = tasks + [{"ansible.builtin.copy": {
        "content": "{{ " + "{" + ", ".join(f"'{n}': {n}" for n in registered) + "}"
                   + " | to_json }}",
        "dest": str(tmp_path / "results.json")}}]
    playbook = tmp_path / "play.json"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False,
                                     "connection": "local", "tasks": tasks}]))
    env = {**os.environ, "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-tmp"),
           "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible-remote-tmp"),
           "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return json.loads((tmp_path / "results.json").read_text())


def test_ansible_ami_and_snapshot_modules(server, ec2, tmp_path):
    ami = new_ami(server, ec2, tmp_path)
    ec2.modify_snapshot_attribute(SnapshotId=ami["SnapshotId"],
                                  Attribute="createVolumePermission", OperationType="add",
                                  UserIds=["111111111111"])
    name = f"ansible-{uuid.uuid4().hex[:8]}"
    results = _play(server, tmp_path, [
        {"amazon.aws.ec2_snapshot_info": {"snapshot_ids": [ami["SnapshotId"]]},
         "register": "snapshots"},
        {"amazon.aws.ec2_ami_info": {"image_ids": [ami["ImageId"]],
                                     "describe_image_attributes": True},
         "register": "images"},
        {"amazon.aws.ec2_ami": {
            "state": "present", "name": name, "architecture": "x86_64",
            "virtualization_type": "hvm", "root_device_name": "/dev/xvda",
            "device_mapping": [{"device_name": "/dev/xvda",
                                "snapshot_id": ami["SnapshotId"]}],
            "description": "registered by ansible", "wait": True},
         "register": "registered"},
        {"amazon.aws.ec2_ami": {"state": "absent", "image_id": "{{ registered.image_id }}",
                                "delete_snapshot": False, "wait": True},
         "register": "deregistered"},
    ])
    snapshot = results["snapshots"]["snapshots"][0]
    assert snapshot["snapshot_id"] == ami["SnapshotId"] and snapshot["state"] == "completed"
    assert snapshot["create_volume_permissions"] == [{"user_id": "111111111111"}]
    image = results["images"]["images"][0]
    assert image["image_id"] == ami["ImageId"] and image["state"] == "available"
    assert image["launch_permissions"] == []
    registered = results["registered"]
    assert registered["changed"] and registered["state"] == "available", registered
    assert registered["name"] == name and registered["description"] == "registered by ansible"
    assert results["deregistered"]["changed"], results["deregistered"]
    image_ids = [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]]
    assert registered["image_id"] not in image_ids
    assert ec2.describe_snapshots(SnapshotIds=[ami["SnapshotId"]])["Snapshots"]
