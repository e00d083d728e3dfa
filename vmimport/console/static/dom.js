// Building the page: elements whose text is only ever set as text, and tables.
"use strict";

const Dom = (() => {
  const $ = (id) => document.getElementById(id);

  // el("td", {className: "x", title: "y"}, "text", otherNode, ...)
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (name === "dataset") Object.assign(node.dataset, value);
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node[name] = value;
    }
    for (const child of children) {
      if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  // A table of `rows` (cells: text, a Node, or {message} for long text) into #target.
  function render(target, columns, rows, emptyText) {
    const box = typeof target === "string" ? $(target) : target;
    box.replaceChildren();
    if (rows.length === 0) {
      box.append(el("p", { className: "empty" }, emptyText));
      return;
    }
    const table = el("table");
    const head = table.createTHead().insertRow();
    for (const c of columns) head.append(el("th", {}, c));
    const body = table.createTBody();
    for (const row of rows) {
      const tr = body.insertRow();
      for (const cell of row) {
        const td = tr.insertCell();
        if (cell instanceof Node) td.append(cell);
        else if (cell !== null && typeof cell === "object") {
          td.className = "message";
          td.textContent = cell.message;
        } else td.textContent = cell ?? "";
      }
    }
    box.append(table);
  }

  function bytes(count) {
    const n = Number(count);
    if (!Number.isFinite(n)) return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return `${Number.isInteger(value) ? value : value.toFixed(1)} ${units[unit]}`;
  }

  // A button that shows "working" while `action` runs and reports its failure in #error.
  function button(text, action, props = {}) {
    const node = el("button", { type: "button", ...props }, text);
    node.addEventListener("click", async () => {
      node.disabled = true;
      try { await action(node); $("error").textContent = ""; }
      catch (err) { $("error").textContent = err.message; }
      finally { node.disabled = false; }
    });
    return node;
  }

  return { $, el, render, bytes, button };
})();
