// Sortable tables and row filters for the cortbench leaderboard. No dependencies, no build step.
// A header cell sorts its column on click (again: the other way). Cells may carry data-sort with
// the value to sort by; th data-type says how to compare: "number", "natural" or "text".
// Empty values always sort last. Each <tbody> sorts on its own, so the measured runs stay above
// the paper's rows. A checkbox.show-rows shows or hides the <tbody> named by its data-rows.
// Plots follow their box when it changes size without the window doing so (the grid reflows).
"use strict";

(function () {
  function sortValue(cell, type) {
    const raw = cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
    if (raw === "" || raw === "–") return null;
    if (type === "number") {
      const n = parseFloat(raw.replace(/,/g, ""));
      return Number.isNaN(n) ? null : n;
    }
    return raw;
  }

  const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

  function compare(a, b, type) {
    if (type === "number") return a - b;
    return collator.compare(a, b);
  }

  function sortTable(table, column, descending) {
    const th = table.tHead.rows[0].cells[column];
    const type = th.dataset.type || "text";
    for (const body of table.tBodies) sortBody(body, column, type, descending);
    for (const cell of table.tHead.rows[0].cells) cell.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }

  function sortBody(body, column, type, descending) {
    const rows = Array.from(body.rows).map((row, index) => ({
      row, index, value: sortValue(row.cells[column], type),
    }));
    rows.sort((x, y) => {
      if (x.value === null || y.value === null) {
        if (x.value === y.value) return x.index - y.index;
        return x.value === null ? 1 : -1;
      }
      const order = compare(x.value, y.value, type);
      return (descending ? -order : order) || x.index - y.index;
    });
    body.append(...rows.map((r) => r.row));
  }

  function makeSortable(table) {
    Array.from(table.tHead.rows[0].cells).forEach((th, column) => {
      th.tabIndex = 0;
      const go = () => {
        // Numbers start high-to-low (best scores first), text A-to-Z; a second click reverses.
        const current = th.getAttribute("aria-sort");
        const descending = current ? current === "ascending" : th.dataset.type === "number";
        sortTable(table, column, descending);
      };
      th.addEventListener("click", go);
      th.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); go(); }
      });
    });
  }

  function makeFilter(input) {
    const table = document.getElementById(input.dataset.table);
    if (!table) return;
    input.addEventListener("input", () => {
      const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      for (const body of table.tBodies) {
        for (const row of body.rows) {
          const text = row.textContent.toLowerCase();
          row.hidden = !words.every((w) => text.includes(w));
        }
      }
    });
  }

  function makeToggle(input) {
    const rows = document.getElementById(input.dataset.rows);
    if (!rows) return;
    const apply = () => { rows.hidden = !input.checked; };
    input.addEventListener("change", apply);
    apply();
  }

  function followBoxes() {
    if (!window.Plotly || !window.ResizeObserver) return;
    const observer = new ResizeObserver((entries) => {
      for (const entry of entries) {
        const plot = entry.target;
        if (plot._fullLayout && Math.abs(plot._fullLayout.width - entry.contentRect.width) > 1) {
          window.Plotly.Plots.resize(plot);
        }
      }
    });
    document.querySelectorAll(".js-plotly-plot").forEach((plot) => observer.observe(plot));
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("table.sortable").forEach(makeSortable);
    document.querySelectorAll("input.filter").forEach(makeFilter);
    document.querySelectorAll("input.show-rows").forEach(makeToggle);
    followBoxes();
  });
})();
