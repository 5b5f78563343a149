// Import page: upload with a progress bar and each file's outcome listed under the form,
// "select all", and the import task's progress.
(function () {
  "use strict";
  var form = document.getElementById("upload");
  var list = document.getElementById("upload-results");

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
        list.textContent = "";
        if (body && body.results) { show(body.results); }
        var error = body && body.error;
        if (error) { problem(typeof error === "string" ? error : error.message); }
        else if (!body) { problem(list.dataset.failed); }
        if (body && body.results && body.results.length) { form.reset(); }
      });
      request.addEventListener("error", function () {
        button.disabled = false;
        list.textContent = "";
        problem(list.dataset.failed);
      });
      button.disabled = true;
      list.textContent = "";
      problem(list.dataset.sending);
      list.firstChild.className = "sending";
      request.send(data);
    });
  }
  var all = document.getElementById("select-all");
  if (all) {
    all.addEventListener("click", function () {
      document.querySelectorAll("input[name=file]").forEach(function (box) { box.checked = true; });
    });
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
