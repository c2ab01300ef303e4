// The import page's live part: follows GET /imports/{task_id}/events (Server-Sent Events,
// authenticated by the session cookie) and shows the API's own status word, the progress,
// rows/s and ETA. When the import ends the page reloads, so the server renders the outcome.
(function () {
  "use strict";
  var section = document.getElementById("import");
  if (!section || section.dataset.terminal === "true" || !window.EventSource) {
    return;
  }
  var statusEl = document.getElementById("import-status");
  var bar = document.getElementById("import-progress");
  var fields = {};
  document.querySelectorAll("#figures [data-field]").forEach(function (el) {
    fields[el.dataset.field] = el;
  });
  var number = new Intl.NumberFormat("en");
  var FINAL = ["done", "failed", "cancelled"];

  function show(progress) {
    if (statusEl.textContent !== progress.status) {
      statusEl.textContent = progress.status;
      statusEl.className = "status status-" + progress.status;
    }
    var total = Math.max(progress.manifest_bytes, 1);
    bar.max = total;
    bar.value = Math.min(progress.bytes_read, total);
    bar.setAttribute(
      "aria-valuetext",
      number.format(progress.bytes_read) + " of " + number.format(progress.manifest_bytes) +
        " bytes read, " + number.format(progress.rows_processed) + " rows"
    );
    fields.rows_processed.textContent = number.format(progress.rows_processed);
    fields.bytes_read.textContent =
      number.format(progress.bytes_read) + " of " + number.format(progress.manifest_bytes);
    fields.rows_per_second.textContent =
      progress.rows_per_second === null ? "not known yet" : number.format(Math.round(progress.rows_per_second));
    fields.eta_seconds.textContent =
      progress.eta_seconds === null ? "not known yet" : Math.round(progress.eta_seconds) + " s";
  }

  var source = new EventSource(section.dataset.events);
  source.addEventListener("progress", function (event) {
    show(JSON.parse(event.data));
  });
  FINAL.forEach(function (name) {
    source.addEventListener(name, function (event) {
      source.close();
      show(JSON.parse(event.data));
      window.location.reload();
    });
  });
})();
