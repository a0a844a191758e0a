// Detections table: data comes from the JSON block and is only ever written with textContent.
(function () {
  "use strict";
  var LEVELS = ["informational", "low", "medium", "high", "critical"];
  var COLORS = { informational: "#7a8899", low: "#3b82c4", medium: "#e0a100", high: "#e0611a", critical: "#c0122c" };
  var COLUMNS = ["time", "host", "level", "rule", "tactics", "techniques", "account", "process", "command", "cluster"];
  var data = JSON.parse(document.getElementById("detections-data").textContent);
  var tbody = document.querySelector("#det-table tbody");
  var filter = document.getElementById("filter");
  var level = document.getElementById("level");
  var shown = document.getElementById("shown");
  var sortKey = "time";
  var sortDir = 1;
  var PAGE = 250;
  var limit = PAGE;
  var more = document.getElementById("more");

  function cellValue(row, key) {
    if (key === "level") { return LEVELS.indexOf(row.level); }
    var v = row[key];
    return v === null || v === undefined ? "" : String(v).toLowerCase();
  }

  function matches(row, needle, minLevel) {
    if (minLevel >= 0 && LEVELS.indexOf(row.level) < minLevel) { return false; }
    if (!needle) { return true; }
    for (var i = 0; i < COLUMNS.length; i++) {
      var v = row[COLUMNS[i]];
      if (v !== null && v !== undefined && String(v).toLowerCase().indexOf(needle) !== -1) { return true; }
    }
    return false;
  }

  function render() {
    var needle = filter.value.trim().toLowerCase();
    var minLevel = level.value ? LEVELS.indexOf(level.value) : -1;
    var rows = data.filter(function (r) { return matches(r, needle, minLevel); });
    rows.sort(function (a, b) {
      var x = cellValue(a, sortKey), y = cellValue(b, sortKey);
      if (x < y) { return -sortDir; }
      if (x > y) { return sortDir; }
      return a.id < b.id ? -1 : (a.id > b.id ? 1 : 0);
    });
    var frag = document.createDocumentFragment();
    rows.slice(0, limit).forEach(function (r) {
      var tr = document.createElement("tr");
      COLUMNS.forEach(function (key) {
        var td = document.createElement("td");
        if (key === "level") {
          var span = document.createElement("span");
          span.className = "lvl";
          span.style.background = COLORS[r.level] || "#555";
          span.textContent = r.level;
          td.appendChild(span);
        } else {
          td.textContent = r[key] === null || r[key] === undefined ? "" : String(r[key]);
          if (key === "command") { td.className = "cmd"; }
          if (key === "process" || key === "account" || key === "host") { td.className = "wrap"; }
        }
        tr.appendChild(td);
      });
      frag.appendChild(tr);
    });
    tbody.replaceChildren(frag);
    shown.textContent = rows.length + " of " + data.length + " detections" +
      (rows.length > limit ? " (first " + limit + " shown)" : "");
    more.hidden = rows.length <= limit;
  }

  document.querySelectorAll("#det-table th").forEach(function (th) {
    th.addEventListener("click", function () {
      var key = th.getAttribute("data-key");
      sortDir = key === sortKey ? -sortDir : 1;
      sortKey = key;
      document.querySelectorAll("#det-table th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(sortDir === 1 ? "asc" : "desc");
      render();
    });
  });
  filter.addEventListener("input", function () { limit = PAGE; render(); });
  level.addEventListener("change", function () { limit = PAGE; render(); });
  more.addEventListener("click", function () { limit += PAGE * 4; render(); });
  render();
}());
