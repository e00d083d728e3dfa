// A snapshot's block map: which blocks hold data, read through the EBS direct API
// (ListSnapshotBlocks, signed in the page) and drawn as a strip of cells plus the ranges.
"use strict";

const BlockMap = (() => {
  const CELLS = 256;      // the strip's cells; each covers 1/CELLS of the volume
  const MAX_PAGES = 50;   // 500,000 blocks (244 GiB of data at 512 KiB): enough for a picture

  async function listBlocks(snapshotId) {
    const key = credentials();
    const path = `/snapshots/${encodeURIComponent(snapshotId)}/blocks`;
    const blocks = [];
    let volumeSize = 0, blockSize = 0, token = "", complete = false;
    for (let page = 0; page < MAX_PAGES; page++) {
      const query = SigV4.queryBody({ maxResults: "10000", ...(token ? { pageToken: token } : {}) });
      const headers = await SigV4.sign({
        accessKey: key.accessKey, secretKey: key.secretKey, region: key.region,
        service: "ebs", host: location.host, method: "GET", path, query,
      });
      const reply = await fetch(`${path}?${query}`, { headers, credentials: "omit" });
      const data = await reply.json().catch(() => ({}));
      if (!reply.ok) {
        throw new Error(`ListSnapshotBlocks: ${data.message || data.Message || reply.status}`);
      }
      volumeSize = data.VolumeSize;
      blockSize = data.BlockSize;
      for (const b of data.Blocks || []) blocks.push(b.BlockIndex);
      token = data.NextToken;
      if (!token) { complete = true; break; }
    }
    return { blocks, volumeSize, blockSize, complete };
  }

  // Runs of consecutive indexes, as "first–last".
  function ranges(indexes) {
    const out = [];
    for (const i of indexes) {
      const last = out[out.length - 1];
      if (last && last[1] === i - 1) last[1] = i; else out.push([i, i]);
    }
    return out.map(([a, b]) => (a === b ? `${a}` : `${a}–${b}`));
  }

  // The map of `snapshotId` drawn into `box` (an element).
  async function draw(box, snapshotId) {
    const { blocks, volumeSize, blockSize, complete } = await listBlocks(snapshotId);
    const total = Math.max(1, Math.ceil(volumeSize * 2 ** 30 / blockSize));
    const filled = new Array(CELLS).fill(0);
    for (const i of blocks) filled[Math.min(CELLS - 1, Math.floor(i * CELLS / total))]++;
    const summary = document.createElement("p");
    summary.className = "blockmap-summary";
    summary.textContent = `${snapshotId}: ${blocks.length}${complete ? "" : "+"} of ${total} ` +
      `blocks of ${blockSize / 1024} KiB hold data ` +
      `(${(blocks.length * blockSize / 2 ** 20).toFixed(1)} MiB of ${volumeSize} GiB)`;
    const strip = document.createElement("div");
    strip.className = "blockmap";
    const perCell = total / CELLS;
    filled.forEach((count, cell) => {
      const span = document.createElement("span");
      span.className = count ? "full" : "";
      const first = Math.floor(cell * perCell);
      span.title = `blocks ${first}–${Math.max(first, Math.ceil((cell + 1) * perCell) - 1)}: ` +
                   `${count} with data`;
      strip.append(span);
    });
    const list = document.createElement("p");
    list.className = "blockmap-ranges";
    const runs = ranges(blocks);
    list.textContent = `block ranges with data: ${runs.slice(0, 40).join(", ")}` +
                       (runs.length > 40 ? `, … (${runs.length} ranges)` : "");
    box.replaceChildren(summary, strip, list);
  }

  return { draw };
})();
