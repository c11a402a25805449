// The dashboard's glue, kept out of the pages (their Content-Security-Policy allows no
// inline script): the CSRF header on every htmx request, selects that submit their
// form, a question before what cannot be undone, times in the reader's own zone, and
// copy buttons.
(function () {
  "use strict";

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  document.addEventListener("htmx:configRequest", function (event) {
    var token = csrf();
    if (token) {
      event.detail.headers["X-CSRF-Token"] = token;
    }
  });

  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      if (el.dataset.local) {
        return;
      }
      var at = new Date(el.getAttribute("datetime"));
      if (!isNaN(at.getTime())) {
        el.title = el.textContent;
        el.textContent = at.toLocaleString();
        el.dataset.local = "1";
      }
    });
  }

  function wire(root) {
    localTimes(root);
    root.querySelectorAll("select[data-autosubmit]").forEach(function (el) {
      if (el.dataset.wired) {
        return;
      }
      el.dataset.wired = "1";
      el.addEventListener("change", function () {
        if (el.form) {
          el.form.requestSubmit();
        }
      });
    });
    root.querySelectorAll("button[data-copy]").forEach(function (el) {
      if (el.dataset.wired) {
        return;
      }
      el.dataset.wired = "1";
      el.addEventListener("click", function () {
        var target = document.getElementById(el.dataset.copy);
        if (target && navigator.clipboard) {
          navigator.clipboard.writeText(target.textContent.trim()).then(function () {
            el.textContent = "Copied";
          });
        }
      });
    });
  }

  // A form that changes something for good asks first (data-confirm holds the question).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
    }
  }, true);

  document.addEventListener("DOMContentLoaded", function () {
    wire(document);
  });
  document.addEventListener("htmx:load", function (event) {
    wire(event.target);
  });
})();
