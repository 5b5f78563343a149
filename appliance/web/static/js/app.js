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
  // Worklist: reload when new results land. The box answers the marker request as soon
  // as something lands (or after ~25 s with nothing new), so a film is on the screen
  // moments after it is screened; the page asks again at once. Where the box did not
  // wait (busy, or an error), it asks again after a few seconds instead.
  var list = document.getElementById("worklist");
  if (list) {
    var pending = false;
    var refreshIfIdle = function () {
      // Refresh at once only when it loses nothing: at the top of the list and not in
      // the middle of a touch. Otherwise the notice is a button, and the page refreshes
      // itself once scrolled back to the top.
      if (pending && window.scrollY < 40 && !document.querySelector(":active")) {
        window.location.reload();
      }
    };
    list.querySelector(".newresults").addEventListener("click", function () {
      window.location.reload();
    });
    setInterval(refreshIfIdle, 2000);
    var watch = function () {
      var url = list.dataset.markerUrl + "?after=" + encodeURIComponent(list.dataset.marker);
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (data && data.marker !== list.dataset.marker) {
            list.dataset.marker = data.marker;
            list.querySelector(".newresults").hidden = false;
            pending = true;
            refreshIfIdle();
          }
          setTimeout(watch, data && data.waited ? 0 : 5000);
        }).catch(function () { setTimeout(watch, 5000); });
    };
    watch();
  }
})();
