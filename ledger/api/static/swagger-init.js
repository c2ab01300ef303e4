// Starts Swagger UI on the service's own schema. A file of ours rather than an inline script,
// so that the Content-Security-Policy can forbid inline scripts (ledger/api/headers.py).
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/schema/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout",
  });
});
