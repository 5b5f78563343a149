// Import page: upload progress bar, "select all", and the import task's progress.
(function () {
  "use strict";
  var form = document.getElementById("upload");
  if (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var bar = document.getElementById("upload-progress");
      var request = new XMLHttpRequest();
      request.open("POST", form.action);
      request.upload.addEventListener("progress", function (e) {
        if (e.lengthComputable) { bar.hidden = false; bar.value = (100 * e.loaded) / e.total; }
      });
      request.addEventListener("load", function () { window.location = request.responseURL || form.action; });
      request.send(new FormData(form));
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
