"""The style sheet and the script inlined into the study page (`html_page.py`); neither loads anything.

The script widens a figure of a `.gallery` from half the page to all of it when it is clicked, and back,
and makes every `table.sortable` sortable by a click on a column header. A header carries
`data-kind` (`number` or `text`) and `data-first` (the direction of its first click: `descending` for
higher-is-better scores, `ascending` for names and lower-is-better columns); a second click reverses it.
A cell carries its raw value in `data-value`; an empty value (a missing score) sorts last in both
directions. The sort is stable, so ties keep the order they had.
"""

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1f2328; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
.note { color: #59636e; margin-top: 0; }
.table-scroll { overflow-x: auto; margin: 1rem 0; }
table.sortable { border-collapse: collapse; font-variant-numeric: tabular-nums; }
table.sortable th, table.sortable td { border: 1px solid #d1d9e0; padding: 0.3rem 0.6rem; }
table.sortable td.number { text-align: right; white-space: nowrap; }
table.sortable th { background: #f6f8fa; cursor: pointer; user-select: none; }
table.sortable td:first-child { white-space: nowrap; }
table.sortable th:hover { background: #eaeef2; }
table.sortable th.metric { text-decoration: underline; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable tbody tr:nth-child(even) { background: #f6f8fa; }
section.run { border-top: 2px solid #d1d9e0; margin-top: 2rem; padding-top: 0.5rem; }
.gallery { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
figure { margin: 0; max-width: 100%; }
.gallery figure { flex: 0 1 calc(50% - 0.5rem); }  /* two side by side; a click on one widens it */
.gallery figure.wide { flex-basis: 100%; }
.gallery img { cursor: zoom-in; }
.gallery figure.wide img { cursor: zoom-out; }
figure img { max-width: 100%; height: auto; border: 1px solid #d1d9e0; }
figcaption { font-size: 0.85rem; color: #59636e; word-break: break-all; }
details pre { background: #f6f8fa; padding: 0.75rem; overflow-x: auto; font-size: 0.85rem; }
code { background: #f6f8fa; padding: 0 0.2rem; }
"""

PAGE_SCRIPT = """
(function () {
  "use strict";
  function sortBy(table, header, descending) {
    var index = header.cellIndex;
    var numeric = header.getAttribute("data-kind") === "number";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = a.cells[index].getAttribute("data-value");
      var y = b.cells[index].getAttribute("data-value");
      if (x === "" || y === "") {
        return (x === "" ? 1 : 0) - (y === "" ? 1 : 0);
      }
      var order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(header.parentNode.cells, function (cell) {
      cell.setAttribute("aria-sort", "none");
    });
    header.setAttribute("aria-sort", descending ? "descending" : "ascending");
  }
  Array.prototype.forEach.call(document.querySelectorAll(".gallery img"), function (image) {
    image.addEventListener("click", function () { image.parentNode.classList.toggle("wide"); });
  });
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (header) {
      header.addEventListener("click", function () {
        var current = header.getAttribute("aria-sort");
        var descending = current === "none" || current === null
          ? header.getAttribute("data-first") === "descending"
          : current === "ascending";
        sortBy(table, header, descending);
      });
    });
  });
})();
"""
