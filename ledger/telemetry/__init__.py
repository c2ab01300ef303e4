"""Telemetry: what the service tells its operators about itself beyond its logs (traces in
``tracing``)."""
