// Exporting an AMI (ExportImage into a bucket of the caller's) and, once done, a link to
// download the file: a presigned S3 URL, valid for an hour, made in this page.
"use strict";

const Exports = (() => {
  const { $, el, button } = Dom;
  const { field } = Api;
  const links = new Map();  // export task id -> presigned URL, made once per page

  function choose(imageId) {
    $("export-image").textContent = imageId;
    $("export-form").dataset.image = imageId;
    $("export-form").hidden = false;
    $("export-form").scrollIntoView({ block: "nearest" });
  }

  async function start(event) {
    event.preventDefault();
    const form = $("export-form");
    const bucket = $("export-bucket").value.trim();
    const prefix = $("export-prefix").value;
    await Api.ensureBucket(bucket);
    const xml = await Api.ec2("ExportImage", {
      ImageId: form.dataset.image, DiskImageFormat: $("export-format").value,
      "S3ExportLocation.S3Bucket": bucket, "S3ExportLocation.S3Prefix": prefix });
    const taskId = xml.getElementsByTagName("exportImageTaskId")[0].textContent;
    form.hidden = true;
    await Console.refreshNow();
    Detail.show("export", taskId);
  }

  // The object an export wrote: <prefix><task id>.<format>, found by listing the prefix
  // (DescribeExportImageTasks does not say the format).
  async function objectPath(task) {
    const bucket = field(task, "s3ExportLocation/s3Bucket");
    const prefix = field(task, "s3ExportLocation/s3Prefix") + field(task, "exportImageTaskId") + ".";
    const { xml } = await Api.s3("GET", `/${bucket}`, { query: { "list-type": "2", prefix },
                                                      what: `ListObjectsV2 ${bucket}` });
    const found = xml.querySelector("Contents > Key");
    if (!found) throw new Error(`${bucket}/${prefix}*: the exported file is not in the bucket`);
    return `/${bucket}/${found.textContent}`;
  }

  function linkTo(url, taskId) {
    const name = decodeURIComponent(new URL(url).pathname.split("/").pop());
    return el("a", { href: url, download: name, className: "download", dataset: { task: taskId },
                     title: "valid for an hour" }, `download ${name}`);
  }

  // What the tasks table shows as an export's result: its download link once completed.
  function result(task) {
    const id = field(task, "exportImageTaskId");
    if (field(task, "status") !== "completed") return field(task, "imageId");
    if (links.has(id)) return linkTo(links.get(id), id);
    return button("Get download link", async (node) => {
      const url = await Api.presign(await objectPath(task));
      links.set(id, url);
      node.replaceWith(linkTo(url, id));
      Detail.render(Console.state);
    }, { className: "get-link", dataset: { task: id } });
  }

  const opener = (imageId) => button("Export", () => choose(imageId), { className: "export",
                                                                      dataset: { image: imageId } });

  function init() {
    $("export-form").addEventListener("submit", (event) => start(event).catch((err) => {
      $("export-error").textContent = err.message;
    }));
    $("export-cancel").addEventListener("click", () => { $("export-form").hidden = true; });
  }

  return { opener, result, init };
})();
