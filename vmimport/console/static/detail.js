// One task in full: its state and message (why it failed), what inspection decided and found
// (the AMI's description names the OS and kernel, as AWS writes it), every disk, and a
// button to cancel it while it runs.
"use strict";

const Detail = (() => {
  const { $, el, bytes, button } = Dom;
  const { field, items } = Api;
  let shown = null;  // {id, kind} of the task on display

  // "AWS-VMImport service: Linux - Ubuntu 22.04.3 LTS - 5.15.0-91-generic" -> its parts.
  function osFromDescription(text) {
    const prefix = "AWS-VMImport service: ";
    if (!text || !text.startsWith(prefix)) return null;
    const [family, name, version] = text.slice(prefix.length).split(" - ");
    return { family, name, version };
  }

  function facts(pairs) {
    const list = el("dl", { className: "facts" });
    for (const [name, value] of pairs) {
      if (value === "" || value === null || value === undefined) continue;
      list.append(el("dt", {}, name), el("dd", {}, value));
    }
    return list;
  }

  function source(disk) {
    const bucket = field(disk, "userBucket/s3Bucket");
    return bucket ? `s3://${bucket}/${field(disk, "userBucket/s3Key")}` : field(disk, "url");
  }

  function diskTable(disks, snapshots) {
    const box = el("div", { className: "scroll" });
    Dom.render(box, ["#", "source", "format found", "image size", "volume", "status", "snapshot"],
      disks.map((d, n) => {
        const snapshotId = field(d, "snapshotId");
        const snapshot = snapshots.get(snapshotId);
        return [n + 1, source(d), field(d, "format"), bytes(field(d, "diskImageSize")),
                snapshot ? `${field(snapshot, "volumeSize")} GiB` : "",
                [field(d, "status"), field(d, "statusMessage")].filter(Boolean).join(": "),
                snapshotId ? BlockMap.opener(snapshotId) : ""];
      }), "No disks.");
    return box;
  }

  async function cancel(kind, id) {
    if (kind === "export") await Api.ec2("CancelExportTask", { ExportTaskId: id });
    else await Api.ec2("CancelImportTask", { ImportTaskId: id,
                                             CancelReason: "cancelled in the console" });
    await Console.refreshNow();
  }

  // Redraw the detail of the task on display from the latest listings (`state`).
  function render(state) {
    const box = $("detail");
    if (!shown) { box.hidden = true; return; }
    const task = state.tasks.find((t) => t.id === shown.id);
    box.hidden = false;
    if (!task) {
      box.replaceChildren(el("h2", {}, shown.id), el("p", { className: "empty" }, "Not listed."));
      return;
    }
    const node = task.node;
    const status = task.status;
    const title = el("h2", {}, `${task.kind === "export" ? "Export" : "Import"} ${task.id}`);
    const close = button("Close", () => { shown = null; render(state); });
    const head = el("div", { className: "row" }, title, close);
    if (status === "active") {
      head.append(button("Cancel task", () => cancel(task.kind, task.id),
                         { id: "cancel-task", className: "danger" }));
    }
    const parts = [head];
    const message = task.message;
    parts.push(el("p", { id: "detail-status", className: status === "deleted" ? "error" : "" },
                  `${status}${task.progress && status === "active" ? ` (${task.progress}%)` : ""}` +
                  (message ? ` — ${message}` : "")));
    if (task.kind === "export") {
      parts.push(facts([["image", field(node, "imageId")],
                        ["bucket", field(node, "s3ExportLocation/s3Bucket")],
                        ["prefix", field(node, "s3ExportLocation/s3Prefix")],
                        ["download", status === "completed" ? Exports.result(node) : ""]]));
      box.replaceChildren(...parts);
      return;
    }
    const detail = task.kind === "snapshot" ? node.getElementsByTagName("snapshotTaskDetail")[0] : node;
    const image = state.images.get(field(node, "imageId"));
    const os = osFromDescription(image ? field(image, "description") : "");
    parts.push(el("h3", {}, "Found"));
    parts.push(facts([
      ["AMI", field(node, "imageId")],
      ["operating system", os ? `${os.family} — ${os.name || "?"}` : field(node, "platform")],
      [os && os.family === "Windows" ? "version" : "kernel", os ? os.version || "" : ""],
      ["platform", image ? field(image, "platformDetails") : field(node, "platform")],
      ["architecture", field(node, "architecture")],
      ["boot mode", field(node, "bootMode")],
      ["license", field(node, "licenseType")],
      ["usage operation", field(node, "usageOperation")],
      ["encrypted", field(detail, "encrypted") === "true" ? `yes (${field(detail, "kmsKeyId")})` : ""],
      ["description", field(detail, "description")],
    ]));
    const disks = task.kind === "snapshot" ? [detail] : items(node, "snapshotDetailSet");
    parts.push(el("h3", {}, "Disks"), diskTable(disks, state.snapshots));
    box.replaceChildren(...parts);
  }

  function show(kind, id) {
    shown = { kind, id };
    render(Console.state);
    $("detail").scrollIntoView({ block: "nearest" });
  }

  // The task id as a button that opens its detail.
  const opener = (kind, id) => el("button", { type: "button", className: "link",
                                               dataset: { task: id },
                                               onclick: () => show(kind, id) }, id);

  return { render, show, opener, osFromDescription };
})();
