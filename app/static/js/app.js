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
      showProblem("Too many attempts. Please wait a minute and try again.");
    } else if (status === 403) {
      showProblem("You don't have access to that.");
    } else {
      showProblem("Something went wrong. Please try again.");
    }
  });
  document.addEventListener("htmx:sendError", function () {
    showProblem("We couldn't reach the server. Check your connection and try again.");
  });
})();
