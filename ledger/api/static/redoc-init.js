// Starts ReDoc on the service's own schema. A module of ours rather than an inline script, so
// that the Content-Security-Policy can forbid inline scripts (ledger/api/headers.py); and
// telemetry off: the page is an auditor's, and sends nothing anywhere but to this service.
import { init } from "./redoc-3.0.1/redoc.standalone.js";

init("/schema/openapi.json", { disableTelemetry: true }, document.getElementById("redoc"));
