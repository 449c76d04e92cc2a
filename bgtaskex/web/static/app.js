// bgtaskex dashboard: what htmx needs besides its attributes, with no inline script
// (the CSP allows scripts from this server only).
// - every htmx request carries the page's CSRF token (X-CSRF-Token);
// - the live parts ([data-live]) do not poll while the tab is hidden, nor while the
//   user types in them; they refresh at once when the tab shows again;
// - a <details> the user opened stays open when its live part is swapped.
(function () {
  "use strict";
  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }
  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrf();
  });
  document.addEventListener("htmx:beforeRequest", function (event) {
    var element = event.detail.elt;
    if (!element.hasAttribute("data-live")) {
      return;
    }
    if (document.hidden) {
      event.preventDefault();
      return;
    }
    var active = document.activeElement;
    if (active && element.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) {
      event.preventDefault();
    }
  });
  var opened = [];
  document.addEventListener("htmx:beforeSwap", function (event) {
    var found = event.detail.target.querySelectorAll("details[open][id]");
    opened = Array.prototype.map.call(found, function (details) { return details.id; });
  });
  document.addEventListener("htmx:afterSwap", function () {
    opened.forEach(function (id) {
      var details = document.getElementById(id);
      if (details) {
        details.open = true;
      }
    });
    opened = [];
  });
  document.addEventListener("visibilitychange", function () {
    if (document.hidden || !window.htmx) {
      return;
    }
    document.querySelectorAll("[data-live]").forEach(function (element) {
      window.htmx.trigger(element, "refresh");
    });
  });
})();
