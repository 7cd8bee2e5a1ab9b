// Closeloop console, the case page: Ctrl+Enter (Cmd+Enter on a Mac) completes the task whose
// form has the focus (the same submit as its button: htmx posts it, or the browser without
// htmx); after a refused form is swapped in, the first field marked wrong gets the focus.
(function () {
  "use strict";
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey) || event.isComposing) { return; }
    var form = event.target.closest && event.target.closest("form[data-case-form]");
    if (!form) { return; }
    event.preventDefault();
    if (typeof form.requestSubmit === "function") { form.requestSubmit(); } else { form.submit(); }
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    var wrong = document.querySelector("form[data-case-form] [aria-invalid=true]");
    if (wrong) { wrong.focus(); }
  });
})();
