// The console: the caller's import and export tasks, images and snapshots, read through the
// API of this server with requests signed in the page (sigv4.js, api.js) and refreshed every
// few seconds; the other modules add the actions (upload.js, detail.js, exports.js,
// blockmap.js). Text is only ever set as text.
"use strict";

const Console = (() => {
  const { $, el, render } = Dom;
  const { ec2, items, field } = Api;
  const REFRESH_MS = 3000;
  const state = { tasks: [], images: new Map(), snapshots: new Map() };

  // "2026-12-03T07:43:25.000Z" -> "2026-12-03 07:43:25 UTC"
  const when = (stamp) => (stamp ? `${stamp.slice(0, 10)} ${stamp.slice(11, 19)} UTC` : "");

  function progressBar(status, progress) {
    const bar = el("progress", { max: 100 });
    bar.value = status === "completed" ? 100 : Number(progress || 0);
    bar.title = `${bar.value}%`;
    return bar;
  }

  // Every task as {id, kind, status, progress, message, result, node}, newest kinds first.
  function tasksOf(images, snapshots, exports) {
    const tasks = items(images, "importImageTaskSet").map((t) => ({
      id: field(t, "importTaskId"), kind: "image", status: field(t, "status"),
      progress: field(t, "progress"), message: field(t, "statusMessage"),
      result: field(t, "imageId"), node: t }));
    for (const t of items(snapshots, "importSnapshotTaskSet")) {
      tasks.push({ id: field(t, "importTaskId"), kind: "snapshot",
                   status: field(t, "snapshotTaskDetail/status"),
                   progress: field(t, "snapshotTaskDetail/progress"),
                   message: field(t, "snapshotTaskDetail/statusMessage"),
                   result: field(t, "snapshotTaskDetail/snapshotId"), node: t });
    }
    for (const t of items(exports, "exportImageTaskSet")) {
      tasks.push({ id: field(t, "exportImageTaskId"), kind: "export", status: field(t, "status"),
                   progress: field(t, "progress"), message: field(t, "statusMessage"),
                   result: Exports.result(t), node: t });
    }
    return tasks;
  }

  async function refresh() {
    const [imageTasks, snapshotTasks, exportTasks, images, snapshots] = await Promise.all([
      ec2("DescribeImportImageTasks"), ec2("DescribeImportSnapshotTasks"),
      ec2("DescribeExportImageTasks"),
      ec2("DescribeImages", { "Owner.1": "self" }), ec2("DescribeSnapshots", { "Owner.1": "self" }),
    ]);
    state.tasks = tasksOf(imageTasks, snapshotTasks, exportTasks);
    state.images = new Map(items(images, "imagesSet").map((i) => [field(i, "imageId"), i]));
    state.snapshots = new Map(items(snapshots, "snapshotSet").map((s) => [field(s, "snapshotId"), s]));
    render("tasks", ["task", "kind", "status", "progress", "message", "result"],
           state.tasks.map((t) => [Detail.opener(t.kind, t.id), t.kind, t.status,
                                   progressBar(t.status, t.progress), { message: t.message },
                                   t.result]), "No tasks.");
    render("images", ["AMI", "", "name", "state", "platform", "architecture", "boot mode", "created"],
           [...state.images.values()].map((i) => [
             field(i, "imageId"), Exports.opener(field(i, "imageId")), field(i, "name"),
             field(i, "imageState"), field(i, "platformDetails"), field(i, "architecture"),
             field(i, "bootMode"), when(field(i, "creationDate"))]), "No images.");
    render("snapshots", ["snapshot", "size", "state", "encrypted", "started", "description"],
           [...state.snapshots.values()].map((s) => [
             BlockMap.opener(field(s, "snapshotId")), `${field(s, "volumeSize")} GiB`,
             field(s, "status"), field(s, "encrypted"), when(field(s, "startTime")),
             field(s, "description")]), "No snapshots.");
    Detail.render(state);
  }

  let timer = null;
  async function loop() {
    clearTimeout(timer);
    try {
      await refresh();
      $("error").textContent = "";
      document.body.dataset.loaded = "yes";  // for tests and people: the tables are current
    } catch (err) {
      $("error").textContent = err.message;
    }
    clearTimeout(timer);  // one timer, whichever refresh ends last
    if (Api.signedIn()) timer = setTimeout(loop, REFRESH_MS);
  }

  function show() {
    const key = Api.signedIn();
    $("sign-in").hidden = !!key;
    $("views").hidden = !key;
    $("sign-out").hidden = !key;
    $("who").textContent = key ? `${key.user} · ${key.region}` : "";
    $("who").title = key ? `session until ${key.expiration}` : "";
    clearTimeout(timer);
    if (key) loop();
  }

  function init() {
    $("sign-in").addEventListener("submit", async (event) => {
      event.preventDefault();
      const secret = $("secret-key");
      try {  // the key is checked by the exchange: nothing is shown before
        await Api.signIn($("access-key").value.trim(), secret.value, $("region").value.trim());
      } catch (err) {
        Api.forget();
        $("sign-in-error").textContent = err.message;
        return;
      } finally {
        secret.value = "";
      }
      $("sign-in-error").textContent = "";
      show();
    });
    $("sign-out").addEventListener("click", async () => { await Api.signOut(); show(); });
    Api.whenSessionEnds((why) => { show(); $("sign-in-error").textContent = why; });
    Upload.init();
    Exports.init();
    show();
  }

  return { state, init, refreshNow: loop };
})();

Console.init();
