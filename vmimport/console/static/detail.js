// One task in full: its state and message (why it failed), the phases it passed with their
// times, what inspection found (partitions, filesystems, OS, kernel, boot modes, findings)
// and decided (with the AMI's block devices), every disk, and a button to cancel it while it
// runs. Imports are read with vmimport's DescribeImportTaskDetail; exports with EC2's calls.
"use strict";

const Detail = (() => {
  const { $, el, bytes, button } = Dom;
  const { field } = Api;
  let shown = null;  // {id, kind} of the task on display
  let extra = { id: null, version: null, data: null, error: null };  // its DescribeImportTaskDetail

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
      list.append(el("dt", {}, name), el("dd", { dataset: { field: name } }, value));
    }
    return list;
  }

  const table = (columns, rows, emptyText) => {
    const box = el("div", { className: "scroll" });
    Dom.render(box, columns, rows, emptyText);
    return box;
  };
  const clock = (epochSeconds) => new Date(epochSeconds * 1000).toISOString().slice(11, 19);
  const took = (seconds) => (seconds < 60 ? `${seconds.toFixed(1)} s`
    : `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`);

  function phases(list) {
    return table(["phase", "disk", "at (UTC)", "took"], list.map((p, n) => [
      p.Phase, p.Disk ?? "", clock(p.Time),
      n + 1 < list.length ? took(list[n + 1].Time - p.Time) : ""]), "No phases yet.");
  }

  function inspection(found) {
    if (!found) return [el("p", { className: "empty" }, "Not inspected (yet).")];
    const os = found.OsName || [found.Distribution, found.Version].filter(Boolean).join(" ");
    return [
      facts([["operating system", found.OsFamily ? `${found.OsFamily} — ${os || "?"}` : "none found"],
             ["version", found.Version], ["kernel", found.Kernel],
             ["Windows", [found.WindowsEdition, found.WindowsBuild].filter(Boolean).join(", build ")],
             ["architecture", found.Architecture],
             ["boot modes found", (found.BootModes || []).join(", ") || "none"],
             ["partition table", found.PartitionScheme || "none"],
             ["root partition", found.RootPartition], ["encrypted volumes", (found.Encrypted || []).join("; ")],
             ["inspection", `${found.Seconds ?? "?"} s${found.Incomplete ? ", stopped early" : ""}`]]),
      table(["#", "start", "size", "type", "filesystem", "label", "boot"],
            (found.Partitions || []).map((p) => [p.Number, bytes(p.Start), bytes(p.Size), p.Type,
                                                 p.Filesystem || "", p.Label || "", p.Active ? "yes" : ""]),
            "No partitions."),
      el("ul", { className: "findings" }, ...(found.Findings || []).map((f) => el("li", {}, f))),
    ];
  }

  function disks(list) {
    return table(["#", "source", "format found", "image size", "disk size", "stored", "blocks shared",
                  "status", "snapshot"],
      list.map((d) => [d.DiskNumber, d.Source, d.Format || "", bytes(d.DiskImageSize),
                       d.VirtualSize ? bytes(d.VirtualSize) : "", d.StoredBytes ? bytes(d.StoredBytes) : "",
                       shared(d),
                       [d.Status, d.StatusMessage].filter(Boolean).join(": "),
                       d.SnapshotId ? BlockMap.opener(d.SnapshotId) : ""]), "No disks.");
  }

  // Of a disk's stored 512 KiB blocks, those found stored already when it was written (in
  // other snapshots, or earlier in the same disk), shared instead of written again.
  function shared(d) {
    if (d.SharedBlocks === undefined || d.SharedBlocks === null || !d.StoredBytes) return "";
    const blocks = Math.round(d.StoredBytes / 524288);
    return `${d.SharedBlocks} of ${blocks} (${Math.round((100 * d.SharedBlocks) / blocks)} %)`;
  }

    // The AMI's block devices as DescribeImages lists them.
  function blockDevices(image) {
    const box = table(["device", "snapshot", "size"], Api.items(image, "blockDeviceMapping").map(
      (m) => [field(m, "deviceName"), field(m, "ebs/snapshotId"),
              field(m, "ebs/volumeSize") ? `${field(m, "ebs/volumeSize")} GiB` : ""]),
    "No block devices.");
    box.id = "detail-devices";
    return box;
  }

  async function cancel(kind, id) {
    if (kind === "export") await Api.ec2("CancelExportTask", { ExportTaskId: id });
    else await Api.ec2("CancelImportTask", { ImportTaskId: id,
                                             CancelReason: "cancelled in the console" });
    await Console.refreshNow();
  }

  // Fetch the import's detail again when the listing shows it changed.
  function fetchExtra(task, state) {
    const version = `${task.status}/${task.progress}/${task.message}`;
    if (extra.id === task.id && extra.version === version) return;
    extra = { id: task.id, version, data: extra.id === task.id ? extra.data : null, error: null };
    Api.vmimport("DescribeImportTaskDetail", { ImportTaskId: task.id })
      .then((data) => { if (extra.id === task.id) extra.data = data; })
      .catch((err) => { if (extra.id === task.id) extra.error = err.message; })
      .finally(() => render(state));
  }

  function head(task) {
    const row = el("div", { className: "row" },
                   el("h2", {}, `${task.kind === "export" ? "Export" : "Import"} ${task.id}`));
    if (task.status === "active") {
      row.append(button("Cancel task", () => cancel(task.kind, task.id),
                        { id: "cancel-task", className: "danger" }));
    }
    row.append(button("Close", () => { shown = null; render(Console.state); }));
    const status = el("p", { id: "detail-status", className: task.status === "deleted" ? "error" : "" },
      `${task.status}${task.progress && task.status === "active" ? ` (${task.progress}%)` : ""}` +
      (task.message ? ` — ${task.message}` : ""));
    return [row, status];
  }

  // Redraw the detail of the task on display from the latest listings (`state`).
  function render(state) {
    const box = $("detail");
    if (!shown) { box.hidden = true; return; }
    box.hidden = false;
    const task = state.tasks.find((t) => t.id === shown.id);
    if (!task) {
      box.replaceChildren(el("h2", {}, shown.id), el("p", { className: "empty" }, "Not listed."));
      return;
    }
    const node = task.node;
    const parts = head(task);
    if (task.kind === "export") {
      parts.push(facts([["image", field(node, "imageId")],
                        ["bucket", field(node, "s3ExportLocation/s3Bucket")],
                        ["prefix", field(node, "s3ExportLocation/s3Prefix")],
                        ["download", task.status === "completed" ? Exports.result(node) : ""]]));
      box.replaceChildren(...parts);
      return;
    }
    fetchExtra(task, state);
    const more = extra.id === task.id ? extra.data : null;
    const detail = task.kind === "snapshot" ? node.getElementsByTagName("snapshotTaskDetail")[0] : node;
    const image = state.images.get(field(node, "imageId"));
    // The OS as inspection named it, else as AWS words it in the AMI's description.
    const found = more && more.Inspection && more.Inspection.OsFamily ? more.Inspection : null;
    const os = found ? { family: found.OsFamily, name: found.OsName || found.Distribution }
      : osFromDescription(image ? field(image, "description") : "");
    parts.push(el("h3", {}, "Decided"), facts([
      ["AMI", field(node, "imageId")],
      ["operating system", os ? `${os.family} — ${os.name || "?"}` : field(node, "platform")],
      ["platform", image ? field(image, "platformDetails") : field(node, "platform")],
      ["architecture", field(node, "architecture")], ["boot mode", field(node, "bootMode")],
      ["license", field(node, "licenseType")], ["usage operation", field(node, "usageOperation")],
      ["encrypted", field(detail, "encrypted") === "true" ? `yes (${field(detail, "kmsKeyId")})` : ""],
      ["description", field(detail, "description")],
      ["root device", image ? field(image, "rootDeviceName") : ""],
    ]));
    if (image) parts.push(el("h3", {}, "AMI block devices"), blockDevices(image));
    if (extra.id === task.id && extra.error) {
      parts.push(el("p", { className: "error" }, extra.error));
    }
    if (more) {
      parts.push(el("h3", {}, "Phases"), phases(more.Phases || []));
      if (task.kind === "image") parts.push(el("h3", {}, "Found on the boot volume"),
                                            ...inspection(more.Inspection));
      parts.push(el("h3", {}, "Disks"), disks(more.Disks || []));
    }
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
