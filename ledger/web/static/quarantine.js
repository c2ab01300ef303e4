// The quarantine pages' scripts, which only add to pages that work without them:
// - the queue's filters apply as soon as one changes: the page at the filter's address is
//   fetched and its results swapped in (the address pushed to the history, so the back button
//   undoes a filter; "N matching", a live region, says what came back), without empty
//   parameters but "status", whose empty value means any status; a failed fetch navigates;
// - "Select all N matching" ticks every row, and the dismissal dialog says how many items it
//   will dismiss;
// - a button with data-opens-dialog opens its <dialog> as a modal instead of asking the server
//   for the confirmation page, and a link with data-close-dialog closes it;
// - a form that posts is sent once per click.
(function () {
  "use strict";

  function filterAddress(form) {
    var params = new URLSearchParams();
    new FormData(form).forEach(function (value, name) {
      if (value !== "" || name === "status") {
        params.append(name, value);
      }
    });
    return form.getAttribute("action") + "?" + params.toString();
  }

  // How many times the queue's results were swapped in: tests and `ledger bench-ui` wait on it.
  var swaps = 0;

  function swapQueue(html, focusedId) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    var parts = ["filters", "queue-results"];
    for (var i = 0; i < parts.length; i += 1) {
      if (!fresh.getElementById(parts[i]) || !document.getElementById(parts[i])) {
        return false;
      }
    }
    parts.forEach(function (id) {
      document.getElementById(id).replaceWith(document.adoptNode(fresh.getElementById(id)));
    });
    // The live region stays the same element, so that what it says now is announced.
    document.getElementById("matching").textContent = fresh.getElementById("matching").textContent;
    document.getElementById("export-link").href = fresh.getElementById("export-link").getAttribute("href");
    bindFilters();
    bindBulk();
    bindDialogs(document.getElementById("queue-results"));
    bindPosts(document.getElementById("queue-results"));
    var focused = focusedId && document.getElementById(focusedId);
    if (focused) {
      focused.focus();
    }
    swaps += 1;
    document.documentElement.dataset.queueSwaps = String(swaps);
    return true;
  }

  function showQueue(address, push, focusedId) {
    fetch(address, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        // A sign-in page or another answer with no queue in it: let the browser show it.
        if (response.redirected || !(response.headers.get("content-type") || "").startsWith("text/html")) {
          throw new Error("not the queue");
        }
        return response.text();
      })
      .then(function (html) {
        if (!swapQueue(html, focusedId)) {
          throw new Error("not the queue");
        }
        if (push) {
          window.history.pushState({ queue: true }, "", address);
        }
      })
      .catch(function () {
        window.location.assign(address);
      });
  }

  function bindFilters() {
    var filters = document.getElementById("filters");
    if (!filters) {
      return;
    }
    filters.addEventListener("change", function (event) {
      showQueue(filterAddress(filters), true, event.target.id);
    });
  }

  if (document.getElementById("queue-results")) {
    window.history.replaceState({ queue: true }, "", window.location.href);
    window.addEventListener("popstate", function (event) {
      if (event.state && event.state.queue) {
        showQueue(window.location.href, false, null);
      }
    });
  }

  function selection() {
    var bulk = document.getElementById("bulk-form");
    var all = document.getElementById("select-all");
    var picks = bulk ? bulk.querySelectorAll('input[name="ids"]') : [];
    return { bulk: bulk, all: all, picks: picks };
  }

  function bindBulk() {
    var s = selection();
    if (!s.all) {
      return;
    }
    s.all.addEventListener("change", function () {
      s.picks.forEach(function (box) {
        box.checked = s.all.checked;
        // Ticked "all": the filter is sent, not the ids of this page.
        box.disabled = s.all.checked;
      });
    });
  }

  function selectedCount() {
    var s = selection();
    if (s.all && s.all.checked) {
      return Number(s.bulk.dataset.allCount);
    }
    var n = 0;
    s.picks.forEach(function (box) {
      if (box.checked) {
        n += 1;
      }
    });
    return n;
  }

  function bindDialogs(root) {
    root.querySelectorAll("[data-opens-dialog]").forEach(function (button) {
      var dialog = document.getElementById(button.dataset.opensDialog);
      if (!dialog || typeof dialog.showModal !== "function") {
        return; // the server's confirmation page does it
      }
      button.addEventListener("click", function (event) {
        event.preventDefault();
        var bulk = document.getElementById("bulk-form");
        if (bulk && bulk.contains(button)) {
          var n = selectedCount();
          var error = document.getElementById("bulk-error");
          if (n === 0) {
            error.textContent = "Tick the items to dismiss, or select all matching, first.";
            return;
          }
          error.textContent = "";
          var count = document.getElementById("dismiss-count");
          count.textContent = count.dataset.template.replace("{n}", n.toLocaleString("en"));
        }
        dialog.showModal();
        var field = dialog.querySelector("textarea, input");
        if (field) {
          field.focus();
        }
      });
    });
    root.querySelectorAll("[data-close-dialog]").forEach(function (link) {
      var dialog = link.closest("dialog");
      link.addEventListener("click", function (event) {
        if (dialog && dialog.open) {
          event.preventDefault();
          dialog.close();
        }
      });
    });
  }

  // One decision per click: a second click while the answer is on its way posts nothing.
  function bindPosts(root) {
    root.querySelectorAll('form[method="post"]').forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (form.dataset.sent === "true") {
          event.preventDefault();
          return;
        }
        form.dataset.sent = "true";
      });
    });
  }

  // Back to a page the browser kept: its forms may be sent again.
  window.addEventListener("pageshow", function () {
    document.querySelectorAll('form[method="post"]').forEach(function (form) {
      delete form.dataset.sent;
    });
  });

  bindFilters();
  bindBulk();
  bindDialogs(document);
  bindPosts(document);
})();
