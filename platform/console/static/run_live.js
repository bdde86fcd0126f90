// A run's page, live: while the run is open the server streams its summary, timeline and pending work
// again whenever they change (server-sent events); each update replaces the part of the page that
// holds them. The HTML comes from the console's own templates, escaped there. Without this script the
// page is the same, as of its loading.
(function () {
  "use strict";

  function start() {
    var container = document.getElementById("run-live");
    var url = container && container.getAttribute("data-live-url");
    if (!url || !window.EventSource) {
      return;
    }
    var state = document.getElementById("live-state");
    var say = function (text) {
      if (state) {
        state.textContent = text;
      }
    };
    var source = new EventSource(url);
    source.addEventListener("open", function () {
      say("Live: this page follows the run as it advances.");
    });
    source.addEventListener("update", function (event) {
      // What the reader opened (the history, an event's JSON) stays open across the update.
      var open = {};
      var opened = container.querySelectorAll("details[data-key][open]");
      for (var i = 0; i < opened.length; i += 1) {
        open[opened[i].getAttribute("data-key")] = true;
      }
      container.innerHTML = event.data;
      var fresh = container.querySelectorAll("details[data-key]");
      for (var j = 0; j < fresh.length; j += 1) {
        if (open[fresh[j].getAttribute("data-key")]) {
          fresh[j].open = true;
        }
      }
    });
    source.addEventListener("end", function (event) {
      // The run closed: without this the browser would connect again.
      source.close();
      if (event.data === "signed-out") {
        say("Your session ended: reload the page to sign in again.");
        return;
      }
      say("The run is closed (" + event.data + ").");
      var openOnly = document.querySelectorAll("[data-open-only]");
      for (var i = 0; i < openOnly.length; i += 1) {
        openOnly[i].hidden = true;
      }
    });
    source.addEventListener("error", function () {
      if (source.readyState !== EventSource.CLOSED) {
        say("Reconnecting…");
      }
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
