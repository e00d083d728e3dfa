// The console: the caller's import tasks, images and snapshots, read through the EC2 API of
// this server with requests signed in the page (sigv4.js). Text is only ever set as text.
"use strict";

const EC2_VERSION = "2016-11-15";
const REFRESH_MS = 3000;
const STORE = "vmimport-console-key";
const $ = (id) => document.getElementById(id);

function credentials() {
  try { return JSON.parse(sessionStorage.getItem(STORE)); } catch { return null; }
}

async function ec2(action, params = {}) {
  const key = credentials();
  const body = SigV4.queryBody({ Action: action, Version: EC2_VERSION, ...params });
  const headers = await SigV4.sign({
    accessKey: key.accessKey, secretKey: key.secretKey, region: key.region, service: "ec2",
    host: location.host, body, contentType: "application/x-www-form-urlencoded; charset=utf-8",
  });
  const reply = await fetch("/", { method: "POST", headers, body, credentials: "omit" });
  const xml = new DOMParser().parseFromString(await reply.text(), "application/xml");
  if (!reply.ok) {
    const code = xml.querySelector("Code")?.textContent || reply.status;
    const message = xml.querySelector("Message")?.textContent || reply.statusText;
    throw new Error(`${action}: ${code}: ${message}`);
  }
  return xml;
}

// The <item>s directly under the response's `setName` element.
function items(xml, setName) {
  const set = xml.getElementsByTagName(setName)[0];
  return set ? Array.from(set.children).filter((e) => e.tagName === "item") : [];
}
const field = (item, name) => {
  const found = Array.from(item.children).find((e) => e.tagName === name);
  return found ? found.textContent : "";
};

function render(target, columns, rows, emptyText) {
  const box = $(target);
  box.replaceChildren();
  if (rows.length === 0) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = emptyText;
    box.append(p);
    return;
  }
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const c of columns) {
    const th = document.createElement("th");
    th.textContent = c;
    head.append(th);
  }
  const bodyRows = table.createTBody();
  for (const row of rows) {
    const tr = bodyRows.insertRow();
    for (const cell of row) {
      const td = tr.insertCell();
      if (cell instanceof Node) {
        td.append(cell);
      } else if (cell !== null && typeof cell === "object") {  // {message}: a long text
        td.className = "message";
        td.textContent = cell.message;
      } else {
        td.textContent = cell ?? "";
      }
    }
  }
  box.append(table);
}

function progressBar(task) {
  const status = field(task, "status");
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = status === "completed" ? 100 : Number(field(task, "progress") || 0);
  bar.title = `${bar.value}%`;
  return bar;
}

async function refresh() {
  const [tasks, snapshotTasks, images, snapshots] = await Promise.all([
    ec2("DescribeImportImageTasks"), ec2("DescribeImportSnapshotTasks"),
    ec2("DescribeImages", { "Owner.1": "self" }), ec2("DescribeSnapshots", { "Owner.1": "self" }),
  ]);
  const taskRows = items(tasks, "importImageTaskSet").map((t) => [
    taskLink(field(t, "importTaskId")), "image", field(t, "status"), progressBar(t),
    { message: field(t, "statusMessage") }, field(t, "imageId"),
  ]);
  for (const t of items(snapshotTasks, "importSnapshotTaskSet")) {
    const detail = t.getElementsByTagName("snapshotTaskDetail")[0];
    taskRows.push([taskLink(field(t, "importTaskId")), "snapshot", field(detail, "status"),
                   progressBar(detail), { message: field(detail, "statusMessage") },
                   field(detail, "snapshotId")]);
  }
  render("tasks", ["task", "kind", "status", "progress", "message", "result"], taskRows,
         "No import tasks.");
  render("images", ["AMI", "name", "state", "platform", "architecture", "boot mode", "created"],
         items(images, "imagesSet").map((i) => [
           field(i, "imageId"), field(i, "name"), field(i, "imageState"),
           field(i, "platformDetails"), field(i, "architecture"), field(i, "bootMode"),
           field(i, "creationDate")]), "No images.");
  render("snapshots", ["snapshot", "size", "state", "encrypted", "started", "description"],
         items(snapshots, "snapshotSet").map((s) => [
           field(s, "snapshotId"), `${field(s, "volumeSize")} GiB`, field(s, "status"),
           field(s, "encrypted"), field(s, "startTime"), field(s, "description")]),
         "No snapshots.");
  if (TaskDetail.shown()) await TaskDetail.update();
}

// A task's id as a button that opens its detail (task-detail.js).
function taskLink(taskId) {
  const button = document.createElement("button");
  button.className = "link";
  button.dataset.task = taskId;
  button.textContent = taskId;
  return button;
}

let timer = null;
async function loop() {
  try {
    await refresh();
    $("error").textContent = "";
    document.body.dataset.loaded = "yes";  // for tests and people: the tables are current
  } catch (err) {
    $("error").textContent = err.message;
  }
  timer = setTimeout(loop, REFRESH_MS);
}

function show() {
  const key = credentials();
  $("sign-in").hidden = !!key;
  $("views").hidden = !key;
  $("sign-out").hidden = !key;
  $("who").textContent = key ? `${key.accessKey} · ${key.region}` : "";
  clearTimeout(timer);
  if (key) loop();
}

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = { accessKey: $("access-key").value.trim(), secretKey: $("secret-key").value,
                region: $("region").value.trim() };
  sessionStorage.setItem(STORE, JSON.stringify(key));
  try {
    await ec2("DescribeImportImageTasks");  // checks the key before showing anything
  } catch (err) {
    sessionStorage.removeItem(STORE);
    $("sign-in-error").textContent = err.message;
    return;
  }
  $("secret-key").value = "";
  $("sign-in-error").textContent = "";
  show();
});
$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(STORE);
  TaskDetail.close();
  show();
});
$("tasks").addEventListener("click", (event) => {
  const taskId = event.target.closest("button[data-task]")?.dataset.task;
  if (taskId) TaskDetail.open(taskId).catch((err) => { $("error").textContent = err.message; });
});
show();
