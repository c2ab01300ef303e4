"""The pages of the service, under /ui/, server-rendered with Jinja2 (autoescaped), calling the
same services as the API (ledger.services), never a second copy of their logic.

How a page is built (to add one, follow ledger/web/controllers/imports.py):

- ``nav.py``: a Section per page (title, path, the roles that may see it). Its ``access`` is the
  page's guard, and the navigation shows only the sections the signed-in role may use.
- ``controllers/``: a Litestar controller per section, ``include_in_schema = False``, guarded
  by its Section, each handler taking ``page: Page`` and answering ``page.render(...)`` or
  ``page.redirect(...)`` (``pages.py``).
- ``templates/``: extend ``base.html``; every form that posts includes
  ``{{ page.csrf_input }}``; scripts are files under ``static/`` (the Content-Security-Policy
  allows no inline script or style), loaded in ``{% block scripts %}``.
- Forms: ``data: Form[SomeStruct]`` (``forms.py``); the router checks the CSRF token of every
  POST before the handler runs.
- Errors are pages (``errors.py``): no session sends a GET to sign in and answers a POST 401;
  a refused role gets the 403 page; a service error shows its status, code and message.
- Sessions (``session_auth.py``, ``cookies.py``, ledger.services.sessions): a token signs in at
  /ui/sign-in; the session's cookie also authenticates the API calls the pages' scripts make,
  which send the session's CSRF token (``<meta name="csrf-token">``) in X-CSRF-Token.

Vendored front-end files: ``static/README.md``.
"""

from __future__ import annotations

from ledger.web.routes import STATIC_PATH, template_config, web_handlers

__all__ = ["STATIC_PATH", "template_config", "web_handlers"]
