// Closeloop console: live countdowns to SLA deadlines. Each [data-due] shows the time left (or
// overdue), on the server's clock: the list's data-now is the server's time when it was drawn,
// so a browser whose clock is off still counts right. Same words as rendering.format_remaining.
(function () {
  "use strict";
  var offset = 0; // server time minus browser time, in ms

  function words(seconds, zh) {
    var late = seconds < 0;
    var minutes = Math.floor(Math.abs(seconds) / 60);
    var days = Math.floor(minutes / 1440), hours = Math.floor((minutes % 1440) / 60);
    minutes = minutes % 60;
    var text;
    if (zh) {
      text = (days ? days + "天" : "") + (days || hours ? hours + "小时" : "") + minutes + "分";
      return late ? "已超时 " + text : "剩余 " + text;
    }
    text = (days ? days + "d " : "") + (days || hours ? hours + "h " : "") + minutes + "m";
    return late ? "overdue " + text : text + " left";
  }

  function sync() {
    var list = document.querySelector("[data-now]");
    var now = list && Date.parse(list.getAttribute("data-now"));
    if (now) { offset = now - Date.now(); }
  }

  function tick() {
    var zh = document.documentElement.lang.indexOf("zh") === 0;
    var now = Date.now() + offset;
    document.querySelectorAll("[data-due]").forEach(function (el) {
      var due = Date.parse(el.getAttribute("data-due"));
      if (isNaN(due)) { return; }
      var left = (due - now) / 1000;
      el.textContent = words(left, zh);
      var task = el.closest(".task");
      if (task) { // breaching soon from the task's warning (its SLA clock's), as the server says
        var warn = Date.parse(el.getAttribute("data-warn") || "");
        var soon = left > 0 && (isNaN(warn) ? left <= 7200 : now >= warn);
        task.classList.toggle("breached", left <= 0);
        task.classList.toggle("soon", soon);
        task.classList.toggle("ok", left > 0 && !soon);
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () { sync(); tick(); setInterval(tick, 5000); });
  // a list fetched again by htmx carries the server's time anew
  document.addEventListener("htmx:afterSwap", function () { sync(); tick(); });
})();
