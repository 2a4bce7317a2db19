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

  // A field's error goes as soon as the person changes what was refused (the server checks it
  // again on submit; without JavaScript the next answer simply has no error for it).
  function renderedValue(input) {
    if (input.type === "checkbox" || input.type === "radio") { return String(input.defaultChecked); }
    if (input.tagName === "SELECT") {
      var chosen = Array.prototype.find.call(input.options, function (o) { return o.defaultSelected; });
      return chosen ? chosen.value : (input.options[0] ? input.options[0].value : "");
    }
    return input.defaultValue;
  }
  function currentValue(input) {
    if (input.type === "checkbox" || input.type === "radio") { return String(input.checked); }
    return input.value;
  }
  function clearError(event) {
    var input = event.target;
    if (!input || !input.getAttribute || input.getAttribute("aria-invalid") !== "true") { return; }
    var now = currentValue(input);
    var before = renderedValue(input);
    // Emptying a field that was refused empty is no fix; any other change is worth a fresh check.
    if (now === before || (now.trim() === "" && before.trim() === "")) { return; }
    var box = input.closest(".field");
    var error = document.getElementById(input.id + "-error");
    if (error) { error.remove(); }
    input.removeAttribute("aria-invalid");
    var described = (input.getAttribute("aria-describedby") || "").split(" ").filter(function (id) {
      return id && id !== input.id + "-error";
    });
    if (described.length) {
      input.setAttribute("aria-describedby", described.join(" "));
    } else {
      input.removeAttribute("aria-describedby");
    }
    if (box && !box.querySelector("[aria-invalid='true']")) { box.classList.remove("has-error"); }
    var form = input.form;
    if (form && !form.querySelector("[aria-invalid='true']")) {
      var summary = form.querySelector(".error-summary");
      if (summary) { summary.remove(); }
    }
  }
  document.addEventListener("input", clearError);
  document.addEventListener("change", clearError);

  // A menu swapped in out of band (the join form's class menus after the code check) keeps the
  // choice made meanwhile, by value, whenever the new menu offers it.
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var old = event.detail.target;
    var fresh = event.detail.fragment;
    if (!old || !fresh || !old.querySelectorAll) { return; }
    old.querySelectorAll("select[name]").forEach(function (menu) {
      if (!menu.value) { return; }
      fresh.querySelectorAll("select").forEach(function (next) {
        if (next.name !== menu.name) { return; }
        Array.prototype.forEach.call(next.options, function (option) {
          if (option.value === menu.value) {
            next.querySelectorAll("option").forEach(function (o) { o.removeAttribute("selected"); });
            option.setAttribute("selected", "");
          }
        });
      });
    });
  });

  // A form sent with htmx comes back re-rendered with what was sent. Anything typed while the
  // answer was on its way (a slow server) is put back into the new form, so no keystroke is lost.
  function typedFields(root) {
    return Array.prototype.filter.call(root.querySelectorAll("input[name], textarea[name], select[name]"),
      function (input) {
        return ["hidden", "password", "file", "submit", "button"].indexOf(input.type) === -1;
      });
  }
  function valueOf(input) {
    return input.type === "checkbox" || input.type === "radio" ? String(input.checked) : input.value;
  }
  var sentValues = new WeakMap();
  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = event.detail.elt;
    if (!form || form.tagName !== "FORM") { return; }
    var sent = {};
    typedFields(form).forEach(function (input) { sent[input.id || input.name] = valueOf(input); });
    sentValues.set(form, sent);
  });
  var typedMeanwhile = null;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var form = event.detail.requestConfig && event.detail.requestConfig.elt;
    var sent = form && sentValues.get(form);
    typedMeanwhile = null;
    if (!sent) { return; }
    typedFields(form).forEach(function (input) {
      var key = input.id || input.name;
      if (key in sent && sent[key] !== valueOf(input)) {
        typedMeanwhile = typedMeanwhile || {};
        typedMeanwhile[key] = input;
      }
    });
  });
  document.addEventListener("htmx:afterSettle", function () {
    if (!typedMeanwhile) { return; }
    Object.keys(typedMeanwhile).forEach(function (key) {
      var old = typedMeanwhile[key];
      var fresh = document.getElementById(key) || document.querySelector('[name="' + key + '"]');
      if (!fresh || fresh === old || fresh.tagName !== old.tagName) { return; }
      if (old.type === "checkbox" || old.type === "radio") {
        fresh.checked = old.checked;
      } else {
        fresh.value = old.value;
      }
    });
    typedMeanwhile = null;
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
