// One import task in detail: its status and message, each disk (format, size, snapshot), the
// AMI it made and what inspection decided (as DescribeImportImageTasks / DescribeImages carry
// them), and a Cancel button while it is active. Uses ec2/items/field/render of console.js.
"use strict";

const TaskDetail = (() => {
  let current = null;  // the task id shown
  const el = (id) => document.getElementById(id);

  // The task and its status part: the task itself for images, snapshotTaskDetail else.
  async function describe(taskId) {
    const images = items(await ec2("DescribeImportImageTasks", { "ImportTaskId.1": taskId }),
                         "importImageTaskSet");
    if (images.length) return { task: images[0], status: images[0], kind: "image" };
    const snaps = items(await ec2("DescribeImportSnapshotTasks", { "ImportTaskId.1": taskId }),
                        "importSnapshotTaskSet");
    if (!snaps.length) throw new Error(`${taskId}: no such task`);
    return { task: snaps[0], status: snaps[0].getElementsByTagName("snapshotTaskDetail")[0],
             kind: "snapshot" };
  }

  function fields(target, pairs) {
    const list = el(target);
    list.replaceChildren();
    for (const [name, value] of pairs) {
      if (value === "" || value === undefined || value === null) continue;
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value;
      dd.dataset.field = name;
      list.append(dt, dd);
    }
  }

  const mib = (bytes) => `${(Number(bytes || 0) / 2 ** 20).toFixed(1)} MiB`;
  const source = (disk) => {
    const bucket = disk.getElementsByTagName("userBucket")[0];
    return bucket ? `s3://${field(bucket, "s3Bucket")}/${field(bucket, "s3Key")}`
                  : field(disk, "url");
  };

  async function update() {
    if (!current) return;
    const taskId = current;
    const { task, status, kind } = await describe(taskId);
    if (current !== taskId) return;  // closed or switched meanwhile
    const state = field(status, "status");
    el("detail-title").textContent = `${kind === "image" ? "Image" : "Snapshot"} import ${taskId}`;
    el("detail").dataset.status = state;
    fields("detail-fields", [
      ["status", state],
      ["progress", field(status, "progress") && `${field(status, "progress")}%`],
      ["message", field(status, "statusMessage")],
      ["description", field(task, "description")],
      ["platform", field(task, "platform")],
      ["architecture", field(task, "architecture")],
      ["boot mode", field(task, "bootMode")],
      ["license", field(task, "licenseType")],
      ["encrypted", field(status, "encrypted") || field(task, "encrypted")],
      ["AMI", field(task, "imageId")],
    ]);
    const disks = kind === "image" ? items(task, "snapshotDetailSet") : [status];
    render("detail-disks", ["device", "format", "image size", "source", "snapshot", "status"],
           disks.map((d) => [field(d, "deviceName"), field(d, "format"),
                             mib(field(d, "diskImageSize")), source(d), field(d, "snapshotId"),
                             field(d, "status")]),
           "No disk details yet.");
    el("cancel-task").hidden = state !== "active";
    await showBlockMaps(disks.map((d) => field(d, "snapshotId")).filter(Boolean), taskId);
    await showImage(field(task, "imageId"), taskId);
  }

  // Each snapshot's block map, drawn once per snapshot (a completed snapshot does not change).
  async function showBlockMaps(snapshotIds, taskId) {
    const box = el("detail-blockmaps");
    if (box.dataset.snapshots === snapshotIds.join(" ")) return;
    box.dataset.snapshots = snapshotIds.join(" ");
    box.replaceChildren();
    for (const snapshotId of snapshotIds) {
      const map = document.createElement("div");
      map.dataset.snapshot = snapshotId;
      box.append(map);
      try {
        await BlockMap.draw(map, snapshotId);
      } catch (err) {
        map.className = "error";
        map.textContent = `${snapshotId}: ${err.message}`;
      }
      if (current !== taskId) return;
    }
  }

  // The AMI as DescribeImages shows it: what inspection decided, its block devices.
  async function showImage(imageId, taskId) {
    if (!imageId) {
      el("detail-image").replaceChildren();
      return;
    }
    const found = items(await ec2("DescribeImages", { "ImageId.1": imageId }), "imagesSet");
    if (current !== taskId) return;
    if (!found.length) {
      el("detail-image").textContent = `${imageId} is no longer there.`;
      return;
    }
    const image = found[0];
    const heading = document.createElement("h3");
    heading.textContent = "Image: what inspection found";
    const list = document.createElement("dl");
    list.id = "detail-image-fields";
    const devices = document.createElement("div");
    devices.id = "detail-devices";
    devices.className = "scroll";
    el("detail-image").replaceChildren(heading, list, devices);
    fields("detail-image-fields", [
      ["AMI", imageId], ["name", field(image, "name")], ["state", field(image, "imageState")],
      ["OS (platform details)", field(image, "platformDetails")],
      ["usage operation", field(image, "usageOperation")],
      ["architecture", field(image, "architecture")], ["boot mode", field(image, "bootMode")],
      ["root device", field(image, "rootDeviceName")],
      ["created", field(image, "creationDate")],
    ]);
    render("detail-devices", ["device", "snapshot", "size"],
           items(image, "blockDeviceMapping").map((m) => {
             const ebs = m.getElementsByTagName("ebs")[0];
             return [field(m, "deviceName"), ebs ? field(ebs, "snapshotId") : "",
                     ebs ? `${field(ebs, "volumeSize")} GiB` : ""];
           }), "No block devices.");
  }

  async function open(taskId) {
    current = taskId;
    el("detail").hidden = false;
    el("cancel-task").hidden = true;
    el("detail-error").textContent = "";
    await update();
    el("detail").scrollIntoView({ block: "nearest" });
  }

  function close() {
    current = null;
    el("detail-blockmaps").dataset.snapshots = "";
    el("detail-blockmaps").replaceChildren();
    el("detail").hidden = true;
  }

  async function cancel() {
    const taskId = current;
    if (!taskId) return;
    el("cancel-task").disabled = true;
    try {
      await ec2("CancelImportTask", { ImportTaskId: taskId,
                                      CancelReason: "cancelled in the console" });
      el("detail-error").textContent = "";
      await refresh();  // console.js: the tables and this detail, at once
    } catch (err) {
      el("detail-error").textContent = err.message;
    } finally {
      el("cancel-task").disabled = false;
    }
  }

  // Deferred scripts run once the document is parsed: the buttons are there.
  el("close-detail").addEventListener("click", close);
  el("cancel-task").addEventListener("click", cancel);

  return { open, close, update, shown: () => current !== null };
})();
