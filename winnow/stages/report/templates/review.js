// winnow report: record review decisions on the flagged examples and download them as the CSV
// that `winnow ingest --corrections FILE` reads (id,action,label,reviewer,time). This script is a
// constant of the package: no value of the data is written into it (they arrive through data-*
// attributes, escaped by the template), and the page's Content-Security-Policy allows it by hash.
(function () {
  "use strict";
  var decisions = new Map();
  function row(d) {
    return [d.id, d.action, d.label === null ? "" : String(d.label), d.reviewer, d.time].map(function (v) {
      return /[",\n\r]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;
    }).join(",");
  }
  function csv() {
    var lines = ["id,action,label,reviewer,time"];
    decisions.forEach(function (d) { lines.push(row(d)); });
    return lines.join("\n") + "\n";
  }
  function reviewer() {
    var input = document.getElementById("winnow-reviewer");
    return input ? input.value : "";
  }
  function record(fig, action, label) {
    var id = fig.getAttribute("data-id");
    decisions.set(id, {id: id, action: action, label: label, reviewer: reviewer(), time: new Date().toISOString()});
    fig.setAttribute("data-decision", action);
    var count = document.getElementById("winnow-count");
    if (count) { count.textContent = String(decisions.size); }
  }
  function download() {
    var blob = new Blob([csv()], {type: "text/csv"});
    var a = document.getElementById("winnow-download");
    a.href = URL.createObjectURL(blob);
    a.download = "corrections.csv";
    a.click();
  }
  document.addEventListener("click", function (e) {
    var t = e.target;
    if (t.id === "winnow-save") { download(); return; }
    var action = t.getAttribute && t.getAttribute("data-action");
    if (!action) { return; }
    var fig = t.closest("figure");
    var label = action === "accept" ? fig.getAttribute("data-suggested")
      : action === "keep" ? fig.getAttribute("data-given") : null;
    record(fig, action, label === null || label === "" ? null : Number(label));
  });
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (!t.classList || !t.classList.contains("relabel") || t.value === "") { return; }
    record(t.closest("figure"), "relabel", Number(t.value));
  });
  window.winnowCorrectionsCsv = csv;
})();
