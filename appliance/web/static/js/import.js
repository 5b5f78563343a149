// Import page: upload with a progress bar and each file's outcome shown first on the page
// (scrolled into view, with "Go to the worklist" once an image is on the box, and the
// refused files' list brought up to date), "select all", the import task's progress, and
// the stick's model-file scan (it runs on the box in the background: the page asks until
// it has finished, then shows what it found).
(function () {
  "use strict";
  var form = document.getElementById("upload");
  var done = document.getElementById("upload-done");
  var list = document.getElementById("upload-results");
  var toWorklist = document.getElementById("to-worklist");

  function reveal() {
    done.hidden = false;
    done.scrollIntoView({ block: "start" });
  }

  // The refused files' section as the server now renders it: it lists what was just refused.
  function refreshRefused() {
    fetch(done.dataset.page, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("refused");
        var shown = document.getElementById("refused");
        if (fresh && shown) { shown.replaceWith(document.importNode(fresh, true)); }
      }).catch(function () {});
  }

  function show(results) {
    list.textContent = "";
    results.forEach(function (r) {
      var item = document.createElement("li");
      item.className = r.status;
      var name = document.createElement("strong");
      name.className = "name";
      name.textContent = r.name;
      var outcome = document.createElement("span");
      outcome.className = "outcome";
      outcome.textContent = r.label;
      item.append(name, " ", outcome);
      if (r.reason) {
        var reason = document.createElement("span");
        reason.className = "reason";
        reason.textContent = r.reason;
        item.append(" ", reason);
      }
      if (r.url) {
        var open = document.createElement("a");
        open.className = "button secondary";
        open.href = r.url;
        open.textContent = list.dataset.open;
        item.append(" ", open);
      }
      list.appendChild(item);
    });
  }

  function problem(text) {
    var item = document.createElement("li");
    item.className = "failed";
    var outcome = document.createElement("span");
    outcome.className = "outcome";
    outcome.textContent = text;
    item.appendChild(outcome);
    list.appendChild(item);
  }

  if (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var bar = document.getElementById("upload-progress");
      var button = form.querySelector("button");
      var data = new FormData(form);
      // The files' own times: photos of one visit are grouped by them (store/visits.py).
      Array.prototype.forEach.call(form.querySelector("input[type=file]").files, function (file) {
        data.append("modified", String(file.lastModified || ""));
      });
      var request = new XMLHttpRequest();
      request.open("POST", form.action);
      request.setRequestHeader("Accept", "application/json");
      request.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) { bar.hidden = false; bar.value = (100 * e.loaded) / e.total; }
      });
      request.addEventListener("load", function () {
        button.disabled = false;
        bar.hidden = true;
        var body = null;
        try { body = JSON.parse(request.responseText); } catch (e) { body = null; }
        var results = (body && body.results) || [];
        list.textContent = "";
        show(results);
        var error = body && body.error;
        if (error) { problem(typeof error === "string" ? error : error.message); }
        else if (!body) { problem(list.dataset.failed); }
        toWorklist.hidden = !results.some(function (r) {
          return r.status === "stored" || r.status === "duplicate";
        });
        if (results.some(function (r) { return r.status === "quarantined" || r.status === "refused"; })) {
          refreshRefused();
        }
        if (results.length) { form.reset(); }
        reveal();
      });
      request.addEventListener("error", function () {
        button.disabled = false;
        bar.hidden = true;
        list.textContent = "";
        problem(list.dataset.failed);
        reveal();
      });
      button.disabled = true;
      toWorklist.hidden = true;
      list.textContent = "";
      problem(list.dataset.sending);
      list.firstChild.className = "sending";
      reveal();
      request.send(data);
    });
  }
  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("click", function () {
      document.querySelectorAll("input[name=file]").forEach(function (box) { box.checked = true; });
    });
  }
  var scan = document.getElementById("model-scan");
  if (scan && scan.dataset.finished === "0") {
    var asking = setInterval(function () {
      fetch(scan.dataset.url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (data) {
          if (data.finished) { clearInterval(asking); window.location.reload(); }
        }).catch(function () {});
    }, 700);
  }
  var task = document.getElementById("task");
  if (task && task.dataset.finished === "0") {
    var timer = setInterval(function () {
      fetch(task.dataset.url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (data) {
          document.getElementById("task-progress").value = data.done;
          document.getElementById("task-done").textContent = data.done;
          if (data.finished) { clearInterval(timer); window.location.reload(); }
        }).catch(function () {});
    }, 700);
  }
})();
