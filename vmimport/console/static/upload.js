// Starting an import from the page: a file chosen (or dropped) is uploaded through the S3 API
// — a multipart upload, parts of 8 MiB, three at a time, each signed with its SHA-256 —
// with a progress bar; or an object already in a bucket is named. Then ImportImage (or
// ImportSnapshot), and the new task's detail is shown.
"use strict";

const Upload = (() => {
  const { $, bytes } = Dom;
  const PART = 8 * 1024 * 1024;
  const PARALLEL = 3;
  const FORMATS = { vmdk: "VMDK", vhd: "VHD", vhdx: "VHDX", ova: "OVA", raw: "RAW", img: "RAW",
                    qcow2: "QCOW2" };

  function formatOf(name) {
    return FORMATS[name.split(".").pop().toLowerCase()] || "";
  }

  function report(sent, total, started) {
    const seconds = (performance.now() - started) / 1000;
    const rate = seconds > 0 ? sent / seconds : 0;
    const left = rate > 0 ? Math.ceil((total - sent) / rate) : null;
    $("upload-progress").max = total || 1;
    $("upload-progress").value = sent;
    $("upload-status").textContent = `${bytes(sent)} of ${bytes(total)}` +
      (rate ? ` · ${bytes(rate)}/s` : "") + (left !== null && sent < total ? ` · ${left} s left` : "");
  }

  async function upload(file, bucket, key) {
    await Api.ensureBucket(bucket);
    const path = `/${bucket}/${key}`;
    const { xml } = await Api.s3("POST", path, { query: { uploads: "" },
                                               what: "CreateMultipartUpload" });
    const uploadId = xml.querySelector("UploadId").textContent;
    const count = Math.max(1, Math.ceil(file.size / PART));
    const sent = new Array(count).fill(0);
    const etags = new Array(count);
    const started = performance.now();
    $("upload-progress").hidden = false;
    report(0, file.size, started);
    let next = 0;
    async function worker() {
      while (next < count) {
        const n = next++;
        const data = await file.slice(n * PART, Math.min(file.size, (n + 1) * PART)).arrayBuffer();
        etags[n] = await Api.s3Part(path, { partNumber: String(n + 1), uploadId }, data, (done) => {
          sent[n] = done;
          report(sent.reduce((a, b) => a + b, 0), file.size, started);
        });
        sent[n] = data.byteLength;
      }
    }
    try {
      await Promise.all(Array.from({ length: Math.min(PARALLEL, count) }, worker));
    } catch (err) {
      await Api.s3("DELETE", path, { query: { uploadId } }).catch(() => {});
      throw err;
    }
    report(file.size, file.size, started);
    const body = "<CompleteMultipartUpload>" + etags.map((etag, n) =>
      `<Part><PartNumber>${n + 1}</PartNumber><ETag>${etag.replace(/&/g, "&amp;")
        .replace(/</g, "&lt;")}</ETag></Part>`).join("") + "</CompleteMultipartUpload>";
    await Api.s3("POST", path, { query: { uploadId }, body, what: "CompleteMultipartUpload" });
  }

  async function start(event) {
    event.preventDefault();
    $("import-error").textContent = "";
    const file = $("import-file").files[0];
    let bucket = $("import-bucket").value.trim();
    let key = $("import-key").value.trim();
    if (file) {
      key = key || file.name;
      await upload(file, bucket, key);
    } else if (key.startsWith("s3://")) {
      [bucket, key] = [key.slice(5).split("/")[0], key.slice(5).split("/").slice(1).join("/")];
    }
    if (!key) throw new Error("Choose a file, or name an object: s3://bucket/key");
    const format = $("import-format").value || formatOf(key);
    const snapshotOnly = $("import-snapshot").checked;
    const prefix = snapshotOnly ? "DiskContainer." : "DiskContainers.1.";
    const params = { [`${prefix}UserBucket.S3Bucket`]: bucket, [`${prefix}UserBucket.S3Key`]: key };
    if (format) params[`${prefix}Format`] = format;
    const description = $("import-description").value.trim();
    if (description) params.Description = description;
    const xml = await Api.ec2(snapshotOnly ? "ImportSnapshot" : "ImportImage", params);
    const taskId = xml.getElementsByTagName("importTaskId")[0].textContent;
    $("import-form").reset();
    $("upload-status").textContent = `${taskId} started`;
    await Console.refreshNow();
    Detail.show(snapshotOnly ? "snapshot" : "image", taskId);
  }

  function init() {
    const form = $("import-form");
    form.addEventListener("submit", (event) => {
      const submit = form.querySelector("button[type=submit]");
      submit.disabled = true;
      start(event).catch((err) => { $("import-error").textContent = err.message; })
        .finally(() => { submit.disabled = false; });
    });
    // A file dropped anywhere on the form is the one to import.
    form.addEventListener("dragover", (event) => { event.preventDefault(); form.classList.add("drop"); });
    form.addEventListener("dragleave", () => form.classList.remove("drop"));
    form.addEventListener("drop", (event) => {
      event.preventDefault();
      form.classList.remove("drop");
      if (event.dataTransfer.files.length) $("import-file").files = event.dataTransfer.files;
    });
  }

  return { init, formatOf };
})();
