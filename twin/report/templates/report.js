(function () {
  "use strict";
  // Filter: hide the rows of a table whose text does not contain the typed words.
  document.querySelectorAll("input[data-filter]").forEach(function (input) {
    var table = document.getElementById(input.getAttribute("data-filter"));
    if (!table) { return; }
    input.addEventListener("input", function () {
      var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      table.querySelectorAll("tbody tr").forEach(function (row) {
        var text = row.textContent.toLowerCase();
        var match = words.every(function (word) { return text.indexOf(word) !== -1; });
        row.hidden = !match;
        if (match) { shown += 1; }
      });
      var counter = document.getElementById(input.getAttribute("data-filter") + "-shown");
      if (counter) { counter.textContent = String(shown); }
    });
  });
  // Sort: a click on a header sorts by that column, a second click reverses.
  // Cells with a data-sort value (numbers, severity rank) sort numerically.
  document.querySelectorAll("table.sortable th").forEach(function (header) {
    header.addEventListener("click", function () {
      var table = header.closest("table");
      var body = table.tBodies[0];
      var descending = header.getAttribute("aria-sort") !== "descending";
      table.querySelectorAll("th").forEach(function (th) { th.removeAttribute("aria-sort"); });
      header.setAttribute("aria-sort", descending ? "descending" : "ascending");
      var column = Array.prototype.indexOf.call(header.parentNode.children, header);
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column], y = b.cells[column];
        var xs = x.getAttribute("data-sort"), ys = y.getAttribute("data-sort");
        var result;
        if (xs && ys) {
          result = parseFloat(xs) - parseFloat(ys);
        } else {
          result = x.textContent.localeCompare(y.textContent, undefined, {numeric: true});
        }
        return descending ? -result : result;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
})();
