// A snapshot's block map: which of its 512 KiB blocks hold data, read with the EBS direct
// API's ListSnapshotBlocks (every page) and drawn on a canvas, one square per block — or,
// on a large volume, per run of blocks, darker the more of them hold data — and the runs of
// blocks that hold data, listed.
"use strict";

const BlockMap = (() => {
  const { $, el, bytes, button } = Dom;
  const MAX_SQUARES = 8192;  // 128 x 64 at most
  const COLUMNS = 128;

  async function stored(snapshotId) {
    const indexes = [];
    let volumeSize = 0;
    let blockSize = 524288;
    let token = null;
    do {
      const query = { maxResults: "10000" };
      if (token) query.pageToken = token;
      const page = await Api.ebs(`/snapshots/${snapshotId}/blocks`, query);
      for (const block of page.Blocks || []) indexes.push(block.BlockIndex);
      volumeSize = page.VolumeSize;
      blockSize = page.BlockSize;
      token = page.NextToken;
    } while (token);
    return { indexes, volumeSize, blockSize };
  }

  function draw(canvas, indexes, total) {
    const perSquare = Math.max(1, Math.ceil(total / MAX_SQUARES));
    const squares = Math.ceil(total / perSquare);
    const columns = Math.min(COLUMNS, squares);
    const rows = Math.ceil(squares / columns);
    const counts = new Uint32Array(squares);
    for (const index of indexes) counts[Math.floor(index / perSquare)] += 1;
    const size = Math.max(3, Math.min(12, Math.floor(768 / columns)));
    canvas.width = columns * size;
    canvas.height = rows * size;
    const paint = canvas.getContext("2d");
    paint.fillStyle = "#e3e6ea";
    paint.fillRect(0, 0, canvas.width, canvas.height);
    for (let n = 0; n < squares; n += 1) {
      if (!counts[n]) continue;
      const share = counts[n] / perSquare;
      paint.fillStyle = `rgba(35, 94, 168, ${0.35 + 0.65 * share})`;
      paint.fillRect((n % columns) * size, Math.floor(n / columns) * size, size - 1, size - 1);
    }
    return perSquare;
  }

  // Runs of consecutive indexes (sorted, as ListSnapshotBlocks gives them), as "first–last".
  function ranges(indexes) {
    const runs = [];
    for (const i of indexes) {
      const last = runs[runs.length - 1];
      if (last && last[1] === i - 1) last[1] = i; else runs.push([i, i]);
    }
    return runs.map(([a, b]) => (a === b ? `${a}` : `${a}–${b}`));
  }

  async function show(snapshotId) {
    const box = $("blockmap");
    box.hidden = false;
    box.replaceChildren(el("h2", {}, `Block map of ${snapshotId}`), el("p", {}, "Reading…"));
    const { indexes, volumeSize, blockSize } = await stored(snapshotId);
    const total = Math.ceil(volumeSize * 1024 ** 3 / blockSize);
    const canvas = el("canvas", { id: "blockmap-canvas", role: "img" });
    const perSquare = draw(canvas, indexes, total);
    canvas.setAttribute("aria-label", `${indexes.length} of ${total} blocks hold data`);
    const summary = el("p", { id: "blockmap-summary" },
      `${indexes.length} of ${total} blocks of ${bytes(blockSize)} hold data ` +
      `(${bytes(indexes.length * blockSize)} of ${volumeSize} GiB); ` +
      (perSquare > 1 ? `each square is ${perSquare} blocks, darker the fuller.` : "each square is one block."));
    const runs = ranges(indexes);
    const listed = el("p", { id: "blockmap-ranges" }, `block ranges with data: ` +
      `${runs.slice(0, 40).join(", ") || "none"}${runs.length > 40 ? `, … (${runs.length} ranges)` : ""}`);
    const close = button("Close", () => { box.hidden = true; });
    box.replaceChildren(el("div", { className: "row" }, el("h2", {}, `Block map of ${snapshotId}`), close),
                        summary, el("div", { className: "scroll" }, canvas), listed);
    box.scrollIntoView({ block: "nearest" });
  }

  const opener = (snapshotId) => button(snapshotId, () => show(snapshotId),
                                        { className: "link blockmap", dataset: { snapshot: snapshotId },
                                          title: "show its block map" });

  return { show, opener };
})();
