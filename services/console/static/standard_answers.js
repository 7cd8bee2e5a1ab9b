// Closeloop console, the standard answers a form offers (the case's respond, answer and
// written-result forms, a visit's call): choosing one puts its text into the form's text area
// (the fieldset's data-fills names it) for the handler to edit; the choice itself is a radio
// button, sent with the form as the answer used. Without this script the texts are listed to
// copy and the choice is sent all the same.
(function () {
  "use strict";
  document.addEventListener("change", function (event) {
    var choice = event.target;
    if (!choice.matches || !choice.matches("fieldset[data-fills] input[type=radio][data-text]")) { return; }
    var area = document.getElementById(choice.closest("fieldset[data-fills]").getAttribute("data-fills"));
    var text = document.getElementById(choice.getAttribute("data-text"));
    if (!area || !text) { return; }
    area.value = text.textContent;
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  });
})();
