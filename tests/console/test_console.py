"""The console in a real browser (Debian's headless Chromium) against a live server: sign in
with a key, see an imported AMI, its snapshot and task listed; a wrong secret is refused;
signing out forgets the key and ends its session on the server. Screenshots are kept in the test's tmp dir (and copied to
$VMIMPORT_TEST_SCREENSHOTS if set) for a person to look at."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest
from botocore.exceptions import ClientError

from ..helpers import wait_task
from .conftest import keep, sign_in


def test_signed_in_console_lists_an_imported_ami(server, ec2, disks, browser, tmp_path):
    server.put_object("console-test", "disk.vmdk", disks["vmdk"])
    task_id = ec2.import_image(DiskContainers=[{"Format": "vmdk", "UserBucket": {
        "S3Bucket": "console-test", "S3Key": "disk.vmdk"}}])["ImportTaskId"]
    image_id = wait_task(ec2, task_id)["ImageId"]
    browser.goto(server.endpoint + "/console/")
    sign_in(browser, "test")
    browser.wait_for(f"document.getElementById('images').textContent.includes('{image_id}')")
    images = browser.evaluate("document.getElementById('images').textContent")
    tasks = browser.evaluate("document.getElementById('tasks').textContent")
    assert "x86_64" in images and task_id in tasks and "[object" not in tasks
    # What is shown: the tables, not the sign-in form (hidden is not overridden by CSS).
    assert browser.evaluate("document.getElementById('sign-in').offsetParent") is None
    assert browser.evaluate("document.getElementById('images').offsetParent !== null")
    assert browser.evaluate("document.getElementById('error').textContent") == ""
    # Only an hour's temporary credentials are kept (session storage of this tab): not the
    # secret, not in the page, not in a cookie.
    assert browser.evaluate("document.cookie") == ""
    assert browser.evaluate("document.getElementById('secret-key').value") == ""
    kept = json.loads(browser.evaluate("sessionStorage.getItem('vmimport-console-key')"))
    assert kept["accessKey"].startswith("ASIA") and kept["sessionToken"]
    assert kept["secretKey"] != "test" and kept["user"] == "test"
    left = datetime.fromisoformat(kept["expiration"].replace("Z", "+00:00")) - \
        datetime.now(timezone.utc)
    assert timedelta(minutes=50) < left <= timedelta(hours=1)
    shot = tmp_path / "console-images.png"
    browser.screenshot(shot)
    keep(shot)
    browser.click("#sign-out")
    browser.wait_for("!document.getElementById('sign-in').hidden")
    assert browser.evaluate("sessionStorage.length") == 0
    # Signed out is ended on the server too: the credentials the page held no longer work.
    with pytest.raises(ClientError) as refused:
        boto3.client("ec2", endpoint_url=server.endpoint, region_name="us-east-1",
                     aws_access_key_id=kept["accessKey"], aws_secret_access_key=kept["secretKey"],
                     aws_session_token=kept["sessionToken"]).describe_images(Owners=["self"])
    assert refused.value.response["Error"]["Code"] == "AuthFailure"


def test_wrong_secret_is_refused_and_forgotten(server, browser):
    browser.goto(server.endpoint + "/console/")
    sign_in(browser, "not-the-secret")
    browser.wait_for("document.getElementById('sign-in-error').textContent !== ''")
    error = browser.evaluate("document.getElementById('sign-in-error').textContent")
    assert "SignatureDoesNotMatch" in error or "AuthFailure" in error
    assert browser.evaluate("sessionStorage.length") == 0
    assert browser.evaluate("document.getElementById('views').hidden") is True


def test_a_refused_session_token_asks_to_sign_in_again(server, browser):
    browser.goto(server.endpoint + "/console/")
    sign_in(browser, "test")
    browser.wait_for("document.body.dataset.loaded === 'yes'")
    # As if the server no longer knew the session (it expired, or was issued elsewhere).
    browser.evaluate("""(() => {
        const kept = JSON.parse(sessionStorage.getItem('vmimport-console-key'));
        kept.sessionToken = 'not-' + kept.sessionToken;
        sessionStorage.setItem('vmimport-console-key', JSON.stringify(kept)); })()""")
    browser.wait_for("!document.getElementById('sign-in').hidden", timeout=30)
    assert "session has ended" in browser.evaluate(
        "document.getElementById('sign-in-error').textContent")
    assert browser.evaluate("sessionStorage.length") == 0
