"use strict";
(function () {
  var q = document.getElementById("q");
  var outcome = document.getElementById("f-outcome");
  var env = document.getElementById("f-env");
  var shown = document.getElementById("shown");
  var form = document.getElementById("run-filter");
  var rq = document.getElementById("rq");
  var runs = Array.prototype.slice.call(document.querySelectorAll("tr.run"));
  var runText = runs.map(function (r) { return r.textContent.toLowerCase(); });
  var sections = Array.prototype.slice.call(document.querySelectorAll("section.env"));
  var revs = Array.prototype.slice.call(document.querySelectorAll("tr.rev"));

  function terms(input) {
    return input.value.toLowerCase().split(/\s+/).filter(function (t) { return t; });
  }

  function filterRuns() {
    var want = terms(q), o = outcome.value, e = env.value, count = 0;
    runs.forEach(function (row, i) {
      var ok = (!o || row.dataset.outcome === o) && (!e || row.dataset.env === e) &&
        want.every(function (t) { return runText[i].indexOf(t) !== -1; });
      row.hidden = !ok;
      if (ok) { count += 1; }
    });
    sections.forEach(function (s) { s.hidden = !!e && s.dataset.env !== e; });
    shown.textContent = count + " of " + runs.length + " runs shown";
  }

  function filterRevisions() {
    var want = terms(rq);
    revs.forEach(function (row) {
      var id = row.dataset.revision.toLowerCase();
      row.hidden = !want.every(function (t) { return id.indexOf(t) !== -1; });
    });
  }

  q.addEventListener("input", filterRuns);
  outcome.addEventListener("change", filterRuns);
  env.addEventListener("change", filterRuns);
  form.addEventListener("submit", function (ev) { ev.preventDefault(); });
  form.addEventListener("reset", function (ev) {
    ev.preventDefault();
    q.value = "";
    outcome.value = "";
    env.value = "";
    filterRuns();
  });
  rq.addEventListener("input", filterRevisions);
  document.addEventListener("keydown", function (ev) {
    var typing = /^(INPUT|SELECT|TEXTAREA)$/.test(document.activeElement.tagName);
    if (ev.key === "/" && !typing) {
      ev.preventDefault();
      q.focus();
    } else if (ev.key === "Escape" && typing) {
      if (document.activeElement === rq) { rq.value = ""; filterRevisions(); } else { form.reset(); }
    }
  });
  window.addEventListener("beforeprint", function () {
    runs.forEach(function (row) {
      if (!row.hidden) {
        Array.prototype.forEach.call(row.querySelectorAll("details"), function (d) { d.open = true; });
      }
    });
  });
  filterRuns();
})();
