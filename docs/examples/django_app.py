"""navai next to a Django project, through Django's WSGI (or ASGI) entry point.

This file is a complete one-file Django project so it runs as is; in your own project the
last lines go in <project>/wsgi.py (or asgi.py). Run it from the repository root:

    waitress-serve --listen 127.0.0.1:3000 docs.examples.django_app:application

and point the voice client at http://localhost:3000/voice.
"""

from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.utils import timezone
from starlette.applications import Starlette
from starlette.routing import Mount
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from navai_adapters import asgi, wsgi
from navai_core import FunctionRegistry, Navai, NavaiConfig

# --- the Django project (normally settings.py and urls.py) ---
settings.configure(
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["localhost", "127.0.0.1", "testserver"],
    SECRET_KEY="replace-me",
    USE_TZ=True,
)


def home(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"app": "my django site"})


urlpatterns = [path("", home)]

# --- navai's functions (any module of your project) ---
tools = FunctionRegistry()


@tools.function
def server_time() -> str:
    """The current date and time on the server."""
    return timezone.now().isoformat()


navai = Navai(NavaiConfig.from_env(), functions=tools)

# --- wsgi.py: Django everywhere, navai under /voice ---
application = DispatcherMiddleware(get_wsgi_application(), {"/voice": wsgi.create_app(navai)})

# --- or asgi.py: the same for an ASGI server ---
asgi_application = Starlette(
    routes=[Mount("/voice", asgi.create_app(navai)), Mount("/", get_asgi_application())],
    lifespan=asgi.lifespan(navai),
)
