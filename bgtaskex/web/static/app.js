// bgtaskex dashboard: what htmx needs besides its attributes, with no inline script
// (the CSP allows scripts from this server only).
// - every htmx request carries the page's CSRF token (X-CSRF-Token);
// - the live parts ([data-live]) do not poll while the tab is hidden, nor while the
//   user types in them; they refresh at once when the tab shows again;
// - a <details> the user opened stays open when its live part is swapped, and the
//   keyboard focus stays where it was.
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
  // the focus inside a live part, as its place among the part's focusable elements:
  // htmx only gives it back to an element with an id, and a keyboard user on a link of
  // a table would otherwise be sent back to the top of the page at every refresh
  var FOCUSABLE = "a[href], button, input, select, textarea, summary, [tabindex]";
  var focused = null;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    var found = target.querySelectorAll("details[open][id]");
    opened = Array.prototype.map.call(found, function (details) { return details.id; });
    var active = document.activeElement;
    focused = null;
    if (target.id && active && active !== target && target.contains(active)) {
      var at = Array.prototype.indexOf.call(target.querySelectorAll(FOCUSABLE), active);
      focused = at >= 0 ? { part: target.id, at: at } : null;
    }
  });
  document.addEventListener("htmx:afterSwap", function () {
    opened.forEach(function (id) {
      var details = document.getElementById(id);
      if (details) {
        details.open = true;
      }
    });
    opened = [];
    var active = document.activeElement;
    var part = focused && document.getElementById(focused.part);
    if (part && (!active || active === document.body)) {
      var again = part.querySelectorAll(FOCUSABLE)[focused.at];
      if (again) {
        again.focus({ preventScroll: true });
      }
    }
    focused = null;
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
