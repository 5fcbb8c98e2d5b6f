"""Static files for the embedded web app and plain Daphne workers (no separate file server)."""

from __future__ import annotations

import mimetypes

from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.exceptions import SuspiciousOperation
from django.http import FileResponse, Http404, HttpRequest, HttpResponse

# The console's scripts are ES modules: a browser runs a module only when it is served with a JavaScript type,
# and a machine's own type registry (/etc/mime.types, the Windows registry) may say otherwise for .js.
mimetypes.add_type("text/javascript", ".js")


class StaticFilesHandler(ASGIStaticFilesHandler):
    """Django's handler, but a path that escapes the static folder or holds a NUL is a 404, not a 500."""

    def serve(self, request: HttpRequest) -> HttpResponse | FileResponse:
        try:
            return super().serve(request)
        except (SuspiciousOperation, ValueError) as exc:
            raise Http404("no such static file") from exc
