// Image viewer: pinch / drag zoom and pan with pointer events; heatmap toggle and opacity.
(function () {
  "use strict";
  var stage = document.getElementById("stage");
  var image = document.getElementById("image");
  if (!stage || !image) { return; }
  var heat = document.getElementById("heatmap");
  var layers = heat ? [image, heat] : [image];
  if (heat) {
    // The overlay is written just after the score is stored: a page opened in between
    // asks again a few times, then shows the image without it.
    var tries = 0;
    var askAgain = function () {
      if (++tries > 5) { heat.hidden = true; return; }
      setTimeout(function () { heat.src = heat.src.split("?")[0] + "?try=" + tries; }, 400 * tries);
    };
    heat.addEventListener("error", askAgain);
    if (heat.complete && heat.naturalWidth === 0) { askAgain(); }  // failed before this ran
  }
  var view = { scale: 1, x: 0, y: 0 };
  var pointers = new Map();
  var last = null;

  function fit() {
    var w = image.naturalWidth || 1, h = image.naturalHeight || 1;
    view.scale = Math.min(stage.clientWidth / w, stage.clientHeight / h);
    view.x = (stage.clientWidth - w * view.scale) / 2;
    view.y = (stage.clientHeight - h * view.scale) / 2;
    apply();
  }
  function apply() {
    layers.forEach(function (el) {
      // The heatmap is stored small: stretch it to the image's size before zooming.
      el.style.width = image.naturalWidth + "px";
      el.style.height = image.naturalHeight + "px";
      el.style.transform = "translate(" + view.x + "px," + view.y + "px) scale(" + view.scale + ")";
    });
  }
  function zoomAt(factor, cx, cy) {
    var next = Math.max(0.1, Math.min(20, view.scale * factor));
    factor = next / view.scale;
    view.x = cx - (cx - view.x) * factor;
    view.y = cy - (cy - view.y) * factor;
    view.scale = next;
    apply();
  }
  function state() {
    var pts = Array.from(pointers.values());
    if (pts.length === 1) { return { x: pts[0].x, y: pts[0].y, d: 0 }; }
    var dx = pts[1].x - pts[0].x, dy = pts[1].y - pts[0].y;
    return { x: (pts[0].x + pts[1].x) / 2, y: (pts[0].y + pts[1].y) / 2, d: Math.hypot(dx, dy) };
  }
  stage.addEventListener("pointerdown", function (e) {
    stage.setPointerCapture(e.pointerId);
    pointers.set(e.pointerId, { x: e.offsetX, y: e.offsetY });
    last = state();
  });
  stage.addEventListener("pointermove", function (e) {
    if (!pointers.has(e.pointerId)) { return; }
    pointers.set(e.pointerId, { x: e.offsetX, y: e.offsetY });
    var now = state();
    if (last) {
      view.x += now.x - last.x;
      view.y += now.y - last.y;
      if (now.d && last.d) { zoomAt(now.d / last.d, now.x, now.y); } else { apply(); }
    }
    last = now;
  });
  function up(e) { pointers.delete(e.pointerId); last = pointers.size ? state() : null; }
  stage.addEventListener("pointerup", up);
  stage.addEventListener("pointercancel", up);
  stage.addEventListener("wheel", function (e) {
    e.preventDefault();
    zoomAt(e.deltaY < 0 ? 1.15 : 1 / 1.15, e.offsetX, e.offsetY);
  }, { passive: false });
  stage.addEventListener("dblclick", fit);
  document.getElementById("zoom-reset").addEventListener("click", fit);
  var toggle = document.getElementById("heatmap-toggle");
  var opacity = document.getElementById("heatmap-opacity");
  if (heat && toggle && opacity) {
    var paint = function () { heat.style.opacity = toggle.checked ? opacity.value / 100 : 0; };
    toggle.addEventListener("change", paint);
    opacity.addEventListener("input", paint);
    paint();
  }
  // Full detail: swap in the full-resolution original, keeping what is on screen. The
  // box decodes it in the background (202 until it is ready): ask (HEAD) each second,
  // then load it as the image's source.
  var full = document.getElementById("full-detail");
  if (full) {
    var show = function () {
      var before = image.naturalWidth;
      image.removeEventListener("load", fit);
      image.addEventListener("load", function () {
        view.scale *= before / image.naturalWidth;
        apply();
        full.hidden = true;
      }, { once: true });
      image.src = full.dataset.url;
    };
    var ask = function () {
      fetch(full.dataset.url, { method: "HEAD", credentials: "same-origin" }).then(function (response) {
        if (response.status === 200) {
          show();
          return;
        }
        if (response.status === 202) {
          full.textContent = full.dataset.preparing;
          setTimeout(ask, 1000);
          return;
        }
        full.textContent = full.dataset.unavailable;
      }).catch(function () {
        setTimeout(ask, 3000);  // the box is busy or restarting: try again
      });
    };
    full.addEventListener("click", function () {
      full.disabled = true;
      ask();
    });
  }
  if (image.complete) { fit(); } else { image.addEventListener("load", fit, { once: true }); }
  window.addEventListener("resize", fit);
})();
