// The overview's optional auto-refresh (progressive enhancement: without
// JavaScript the checkbox stays hidden and the page is simply static).
// The choice is remembered in this browser; the page reloads itself.
(function () {
  "use strict";
  const script = document.currentScript;
  const seconds = Number(script && script.dataset.seconds) || 10;
  const KEY = "streamlimit.overview.autoRefresh";
  document.addEventListener("DOMContentLoaded", function () {
    const box = document.getElementById("auto-refresh");
    if (!box) return;
    box.closest("label").hidden = false;
    let timer = null;
    function schedule() {
      clearTimeout(timer);
      if (box.checked) timer = setTimeout(function () { window.location.reload(); }, seconds * 1000);
    }
    try { box.checked = window.localStorage.getItem(KEY) === "on"; } catch (e) { /* storage may be off */ }
    box.addEventListener("change", function () {
      try { window.localStorage.setItem(KEY, box.checked ? "on" : "off"); } catch (e) { /* ignore */ }
      schedule();
    });
    schedule();
  });
})();
