// Small helpers used on every page. No framework, no network beyond this box.
(function () {
  "use strict";
  // Language menu: change as soon as a language is picked.
  document.querySelectorAll("select.autosubmit").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
  // On-screen PIN keypad (the kiosk has no keyboard).
  document.querySelectorAll(".keypad").forEach(function (pad) {
    var target = document.getElementById(pad.dataset.target);
    pad.removeAttribute("aria-hidden");
    pad.addEventListener("click", function (event) {
      var key = event.target.dataset && event.target.dataset.key;
      if (!key) { return; }
      if (key === "⌫") { target.value = target.value.slice(0, -1); }
      else if (key === "✓") { target.form.requestSubmit(); }
      else { target.value += key; }
    });
  });
  var print = document.getElementById("print");
  if (print) { print.addEventListener("click", function () { window.print(); }); }
  // Worklist: reload when new results land (polls a tiny marker, not the whole list).
  var list = document.getElementById("worklist");
  if (list) {
    list.querySelector(".newresults").addEventListener("click", function () {
      window.location.reload();
    });
    setInterval(function () {
      fetch(list.dataset.markerUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (data && data.marker !== list.dataset.marker) {
            var notice = list.querySelector(".newresults");
            notice.hidden = false;
            // Refresh at once only when it loses nothing: at the top of the list and
            // not in the middle of a touch. Otherwise the notice is a button.
            if (window.scrollY < 40 && !document.querySelector(":active")) {
              window.location.reload();
            }
          }
        }).catch(function () {});
    }, 5000);
  }
})();
