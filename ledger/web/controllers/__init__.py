"""One controller per section of the UI (ledger.web.nav), each taking ``page: Page``."""
