// The upload page: sends the chosen manifest through the tus 1.0 server at /uploads/ with the
// vendored tus-js-client, in chunks of at most 8 MiB, with the session's CSRF token. An upload
// cut off (a reload, a dropped network, "Pause") resumes from the server's offset: the client
// keeps each upload's URL in localStorage under a fingerprint of the file and the form, so
// picking the same file again and pressing "Upload" continues it rather than starting over.
// When the last byte is in, the server names the import (Ledger-Import) and the page goes there.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.tus) {
    return;
  }
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var input = document.getElementById("manifest-file");
  var zone = document.getElementById("drop-zone");
  var uploadButton = document.getElementById("upload-button");
  var pauseButton = document.getElementById("pause-button");
  var resumeButton = document.getElementById("resume-button");
  var bar = document.getElementById("upload-progress");
  var bytesText = document.getElementById("upload-bytes");
  var errorText = document.getElementById("upload-error");
  var number = new Intl.NumberFormat("en");
  var IMPORT_PATH = /^\/imports\/[0-9a-fA-F-]{36}$/;
  var upload = null;
  var importPath = null;

  function fail(message) {
    errorText.textContent = message;
    uploadButton.disabled = false;
    pauseButton.hidden = true;
    resumeButton.hidden = true;
  }

  function serverMessage(error) {
    var response = error && error.originalResponse;
    if (response) {
      try {
        var body = JSON.parse(response.getBody());
        if (body && body.message) {
          return body.message + (body.code ? " (" + body.code + ")" : "");
        }
      } catch (ignored) {
        // not JSON: fall back to the status
      }
      return "the server answered " + response.getStatus();
    }
    return error && error.message ? error.message : "the upload failed";
  }

  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (event) {
      event.preventDefault();
      zone.classList.add("over");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function () {
      zone.classList.remove("over");
    });
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
    }
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    errorText.textContent = "";
    var file = input.files && input.files[0];
    if (!file) {
      fail("Choose a manifest file first.");
      input.focus();
      return;
    }
    var policy = document.getElementById("policy").value;
    var lab = document.getElementById("lab").value;
    var dryRun = document.getElementById("dry-run").checked ? "true" : "false";
    var endpoint = form.dataset.endpoint;
    importPath = null;
    uploadButton.disabled = true;
    upload = new window.tus.Upload(file, {
      endpoint: endpoint,
      chunkSize: Number(form.dataset.chunkSize),
      retryDelays: [0, 1000, 3000, 5000, 10000],
      metadata: { filename: file.name, policy: policy, lab: lab, dry_run: dryRun },
      headers: { "X-CSRF-Token": csrf },
      storeFingerprintForResuming: true,
      removeFingerprintOnSuccess: true,
      // The form's choices are in the fingerprint: the same file sent with another policy,
      // lab or dry-run setting is another upload, not the continuation of this one.
      fingerprint: function (f) {
        return Promise.resolve(
          ["ledger-tus", endpoint, f.name, f.type, f.size, f.lastModified, policy, lab, dryRun].join("|")
        );
      },
      onProgress: function (sent, total) {
        bar.max = total;
        bar.value = sent;
        bytesText.textContent = number.format(sent) + " of " + number.format(total) + " bytes sent";
      },
      onAfterResponse: function (request, response) {
        var named = response.getHeader("Ledger-Import");
        if (named && IMPORT_PATH.test(named)) {
          importPath = named;
        }
      },
      onError: function (error) {
        fail("Upload failed: " + serverMessage(error));
      },
      onSuccess: function () {
        pauseButton.hidden = true;
        resumeButton.hidden = true;
        if (!importPath) {
          fail("The upload finished but the server did not name its import.");
          return;
        }
        bytesText.textContent = "Upload complete; opening the import.";
        window.location.assign("/ui" + importPath);
      },
    });
    upload
      .findPreviousUploads()
      .then(function (previous) {
        if (previous.length) {
          upload.resumeFromPreviousUpload(previous[0]);
        }
        pauseButton.hidden = false;
        resumeButton.hidden = true;
        upload.start();
      })
      .catch(function (error) {
        fail("Upload failed: " + serverMessage(error));
      });
  });

  pauseButton.addEventListener("click", function () {
    if (!upload) {
      return;
    }
    upload.abort();
    pauseButton.hidden = true;
    resumeButton.hidden = false;
    resumeButton.focus();
    bytesText.textContent += " (paused)";
  });
  resumeButton.addEventListener("click", function () {
    if (!upload) {
      return;
    }
    resumeButton.hidden = true;
    pauseButton.hidden = false;
    pauseButton.focus();
    upload.start();
  });
})();
