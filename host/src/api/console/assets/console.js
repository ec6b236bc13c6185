// OmniFlow console: live updates, nothing else. Pages work without it.
(function () {
  "use strict";

  // Replace #live's content with a fresh server rendering of it, keeping
  // which step details are open.
  function refresher(live, url) {
    var pending = false, running = false;
    function run() {
      if (running) { pending = true; return; }
      running = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html === null) return;
          var open = {};
          live.querySelectorAll("details[open]").forEach(function (d) { open[d.id] = true; });
          live.innerHTML = html;
          live.querySelectorAll("details").forEach(function (d) { if (open[d.id]) d.open = true; });
          live.dispatchEvent(new CustomEvent("omniflow:updated", { bubbles: true }));
        })
        .catch(function () {})
        .then(function () {
          running = false;
          if (pending) { pending = false; schedule(); }
        });
    }
    var timer = null;
    function schedule() {
      if (timer) return;
      timer = setTimeout(function () { timer = null; run(); }, 150);
    }
    return schedule;
  }

  function runPage(live) {
    var refresh = refresher(live, live.dataset.liveRun);
    if (live.hasAttribute("data-done") || !window.EventSource) return;
    var names = ["run_started", "step_started", "step_retrying", "step_waiting",
                 "step_finished", "run_parked", "run_finished"];
    var source = new EventSource(live.dataset.events);
    names.forEach(function (name) {
      source.addEventListener(name, function () {
        refresh();
        if (name === "run_finished") { source.close(); setTimeout(refresh, 400); }
      });
    });
    // A safety net: a stream cut by a proxy still ends up current.
    var poll = setInterval(function () {
      var meta = live.querySelector("#run-meta");
      var status = meta && meta.dataset.runStatus;
      if (status === "succeeded" || status === "failed" || status === "cancelled") {
        clearInterval(poll); source.close(); return;
      }
      refresh();
    }, 5000);
  }

  function listPage(live) {
    var refresh = refresher(live, live.dataset.liveList);
    if (window.EventSource) {
      var source = new EventSource(live.dataset.stream);
      source.addEventListener("changed", refresh);
    }
    setInterval(refresh, 15000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("live");
    if (!live) return;
    if (live.dataset.liveRun) runPage(live);
    else if (live.dataset.liveList) listPage(live);
  });
})();
