"""The oversight dashboard: server-rendered pages (Jinja2) with htmx for actions.

Pages read through the same parts as the API and act through the API's own routes (htmx
posts with the session's CSRF token), so there is one implementation of every rule. Assets
are vendored (``static/``, htmx from the npm registry; see ``scripts/vendor-assets``); no CDN.
Charts are inline SVG drawn on the server.
"""

from custos.web.pages import error_page, install, login_page

__all__ = ["error_page", "install", "login_page"]
