// Progressive enhancement only: every screen works without this file.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  // Only the fields of the chosen kind of authentication are shown (all of them without JS).
  var authType = document.getElementById("auth_type");
  function showAuth() {
    document.querySelectorAll(".auth").forEach(function (el) {
      el.classList.toggle("shown", el.dataset.auth === authType.value);
    });
  }
  if (authType) { authType.addEventListener("change", showAuth); showAuth(); }

  // The request preview renders in place, as the form changes.
  var form = document.querySelector("form[data-preview]");
  var target = document.getElementById("preview");
  var timer = null;
  function preview() {
    var body = new FormData(form);
    fetch("/portal/preview", {method: "POST", body: body, credentials: "same-origin",
                              headers: {"X-Requested-With": "portal"}})
      .then(function (r) { return r.text(); })
      .then(function (html) { target.innerHTML = html; });
  }
  if (form && target) {
    form.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(preview, 400); });
    var button = form.querySelector("[data-preview-button]");
    if (button) { button.addEventListener("click", function (e) { e.preventDefault(); preview(); }); }
  }

  // Confirm before a change that cannot be undone.
  document.querySelectorAll("[data-confirm]").forEach(function (el) {
    el.addEventListener("click", function (e) { if (!window.confirm(el.dataset.confirm)) { e.preventDefault(); } });
  });

  // Select the secret on focus, so it is copied with one keystroke.
  document.querySelectorAll("[data-copy]").forEach(function (el) {
    el.addEventListener("focus", function () { el.select(); });
  });
})();
