// The staff console in the browser: live parts refreshed without a reload (server-sent
// events from /staff/live), each form sent once, canned reply codes put in the reply box.
// Plain JavaScript, no build step; loaded from a file because the CSP allows no inline
// scripts.
(function () {
  "use strict";

  // A part the person is using (focus inside, or a draft typed) is not replaced under
  // their hands; it is refreshed once they leave it.
  function inUse(part) {
    var active = document.activeElement;
    if (active && active !== document.body && part.contains(active)) {
      return true;
    }
    var boxes = part.querySelectorAll("textarea");
    for (var i = 0; i < boxes.length; i++) {
      if (boxes[i].value.trim() !== "") {
        return true;
      }
    }
    return false;
  }

  function atBottom(el) {
    return el.scrollHeight - el.scrollTop - el.clientHeight < 40;
  }

  function toBottom(el) {
    if (el.getAttribute("data-stick") === "bottom") {
      el.scrollTop = el.scrollHeight;
    }
  }

  function refresh(part) {
    if (part.dataset.loading === "1") {
      part.dataset.again = "1";
      return;
    }
    part.dataset.loading = "1";
    fetch(part.getAttribute("data-live-src"), { credentials: "same-origin" })
      .then(function (response) {
        if (response.redirected && response.url.indexOf("/staff/login") !== -1) {
          window.location.reload(); // the session ended: to the login page
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) {
          return;
        }
        if (inUse(part)) {
          part.dataset.stale = "1";
          return;
        }
        var stick = atBottom(part);
        part.innerHTML = html;
        part.dataset.stale = "";
        if (stick) {
          toBottom(part);
        }
      })
      .catch(function () {
        // Offline for a moment: the next change event tries again.
      })
      .then(function () {
        part.dataset.loading = "";
        if (part.dataset.again === "1") {
          part.dataset.again = "";
          refresh(part);
        }
      });
  }

  function liveParts() {
    return document.querySelectorAll("[data-live-src]");
  }

  function listen() {
    var parts = liveParts();
    if (!parts.length || !window.EventSource) {
      return;
    }
    // A conversation page also follows its own messages (data-live-stream names them).
    var stream = document.querySelector("[data-live-stream]");
    var source = new EventSource(stream ? stream.getAttribute("data-live-stream") : "/staff/live");
    source.addEventListener("change", function () {
      liveParts().forEach(refresh);
    });
    window.addEventListener("pagehide", function () {
      source.close();
    });
    document.addEventListener("focusout", function () {
      // After the focus has moved: a part left stale while in use catches up.
      window.setTimeout(function () {
        liveParts().forEach(function (part) {
          if (part.dataset.stale === "1" && !inUse(part)) {
            refresh(part);
          }
        });
      }, 0);
    });
  }

  // A form is sent once: a second click or Enter does nothing, and its buttons are
  // disabled once the browser has taken the clicked one's value.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) {
      return;
    }
    if (form.dataset.sent === "1") {
      event.preventDefault();
      return;
    }
    form.dataset.sent = "1";
    window.setTimeout(function () {
      form.querySelectorAll("button").forEach(function (button) {
        button.disabled = true;
      });
    }, 0);
  });

  // Back to a page from the browser's cache: its forms may be sent again.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) {
      return;
    }
    document.querySelectorAll("form").forEach(function (form) {
      form.dataset.sent = "";
      form.querySelectorAll("button").forEach(function (button) {
        button.disabled = false;
      });
    });
  });

  // A canned reply's button puts its /code at the start of the reply box.
  document.addEventListener("click", function (event) {
    var button = event.target instanceof Element ? event.target.closest("[data-insert]") : null;
    if (!button || !button.form) {
      return;
    }
    var box = button.form.querySelector("textarea");
    if (!box) {
      return;
    }
    var code = button.getAttribute("data-insert");
    box.value = code + box.value.replace(/^\/[a-z0-9_-]+\s*/, "");
    box.focus();
    box.setSelectionRange(box.value.length, box.value.length);
  });

  document.addEventListener("DOMContentLoaded", function () {
    liveParts().forEach(toBottom);
    listen();
  });
})();
