// Small, CSP-safe behaviour: no inline script anywhere, so it all lives here.
(function () {
  "use strict";

  // htmx sends the CSRF token with every request, like the hidden field in plain forms.
  document.addEventListener("htmx:configRequest", function (event) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) {
      event.detail.headers["X-CSRFToken"] = meta.getAttribute("content");
    }
  });

  // A failed htmx request (rate limit, server error, lost connection) says so instead of doing nothing.
  // The texts come translated on #flashes (data-msg-*; the CSP allows no inline script). They are
  // read once at load too, because an out-of-band swap replaces #flashes without them.
  var FALLBACK = {
    msgRateLimited: "Too many attempts. Please wait a minute and try again.",
    msgForbidden: "You don't have access to that.",
    msgError: "Something went wrong. Please try again.",
    msgSendError: "We couldn't reach the server. Check your connection and try again."
  };
  var loaded = {};
  var first = document.getElementById("flashes");
  Object.keys(FALLBACK).forEach(function (key) {
    loaded[key] = (first && first.dataset[key]) || FALLBACK[key];
  });
  function message(key) {
    var box = document.getElementById("flashes");
    return (box && box.dataset[key]) || loaded[key];
  }
  function showProblem(text) {
    var box = document.getElementById("flashes");
    if (!box) { return; }
    var p = document.createElement("p");
    p.className = "flash flash-error";
    p.setAttribute("role", "alert");
    p.textContent = text;
    box.replaceChildren(p);
  }
  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr.status;
    if (status === 429) {
      showProblem(message("msgRateLimited"));
    } else if (status === 403) {
      showProblem(message("msgForbidden"));
    } else {
      showProblem(message("msgError"));
    }
  });
  document.addEventListener("htmx:sendError", function () {
    showProblem(message("msgSendError"));
  });

  // Impactful buttons are links to a confirmation page (data-confirm names a <dialog> holding the
  // same form): with JS the dialog opens instead, and its form posts what that page would.
  document.addEventListener("click", function (event) {
    var opener = event.target.closest ? event.target.closest("a[data-confirm]") : null;
    if (!opener) { return; }
    var dialog = document.getElementById(opener.dataset.confirm);
    if (!dialog || typeof dialog.showModal !== "function") { return; }  // follow the link
    event.preventDefault();
    dialog.showModal();
  });
  // An htmx answer usually replaces the dialog with its section; an error answer leaves it open.
  document.addEventListener("htmx:afterRequest", function (event) {
    var dialog = event.target.closest ? event.target.closest("dialog[open]") : null;
    if (dialog) { dialog.close(); }
  });
})();
