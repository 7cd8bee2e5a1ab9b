// Closeloop console, the front desk's forms: Ctrl+Enter (or Cmd+Enter) sends the form the cursor is in
// through its main button; a second click while the first send is on its way sends nothing more
// (intake's Idempotency-Key, a hidden field of the form, would answer the first answer anyway).
(function () {
  "use strict";

  function formOf(el) {
    return (el && el.closest && el.closest("form.desk-form")) || document.querySelector("form.desk-form");
  }

  document.addEventListener("keydown", function (e) {
    if (e.key !== "Enter" || !(e.ctrlKey || e.metaKey) || e.isComposing) { return; }
    var form = formOf(e.target);
    if (!form) { return; }
    e.preventDefault();
    var button = form.querySelector("[data-primary]");
    if (form.requestSubmit) { form.requestSubmit(button || undefined); } else if (button) { button.click(); }
  });

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (!form.classList || !form.classList.contains("desk-form") || form.method.toLowerCase() !== "post") { return; }
    var adding = e.submitter && String(e.submitter.value).indexOf("add_") === 0;
    if (form.getAttribute("data-sending") === "1") { e.preventDefault(); return; }
    if (!adding) {
      form.setAttribute("data-sending", "1");
      form.setAttribute("aria-busy", "true");
    }
  });

  // Back to a form the browser kept in memory: it may be sent again (intake answers the first answer).
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form.desk-form[data-sending]").forEach(function (form) {
      form.removeAttribute("data-sending");
      form.removeAttribute("aria-busy");
    });
  });
})();
