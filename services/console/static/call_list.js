// Closeloop console, the call list and a visit: keyboard shortcuts. `n` opens the next visit
// (the "Next visit" form of the call list and of a visit's page); Ctrl+Enter
// (or Cmd+Enter) saves the call being recorded. Not while typing in a field, for `n`.
(function () {
  "use strict";

  function typing(el) {
    if (!el) { return false; }
    var tag = el.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || el.isContentEditable;
  }

  function submit(form) {
    if (!form) { return; }
    if (form.requestSubmit) { form.requestSubmit(); } else { form.submit(); }
  }

  document.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      var attempt = document.getElementById("visit-attempt");
      if (attempt) { event.preventDefault(); submit(attempt); }
      return;
    }
    if ((event.key === "n" || event.key === "N") && !event.ctrlKey && !event.metaKey && !event.altKey
        && !typing(event.target)) {
      var next = document.getElementById("next-visit");
      if (next) { event.preventDefault(); submit(next); }
    }
  });
})();
