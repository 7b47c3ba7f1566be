"""navai in a Django project through include(): Django's middleware and session apply.

This file is a complete one-file Django project so it runs as is; in your own project the
settings go in settings.py and the URL patterns in urls.py. Save it as app.py, then in that
folder (./navai being a clone of navai, see README) run it with a WSGI server, or an ASGI
server (the same views serve both):

    pip install './navai[django]'
    waitress-serve --listen 127.0.0.1:3000 app:application
    uvicorn app:asgi_application --port 3000

and point the voice client at http://localhost:3000/voice.
"""

from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import include, path
from django.utils import timezone

from navai_adapters.django import navai_urls
from navai_core import FunctionRegistry, Navai, NavaiConfig, RequestContext

# --- settings.py ---
settings.configure(
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["localhost", "127.0.0.1", "testserver"],
    SECRET_KEY="replace-me",
    USE_TZ=True,
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",  # navai's views are exempt: JSON only
    ],
    SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies",
)

# --- navai's functions (any module of your project) ---
tools = FunctionRegistry()


@tools.function
def server_time() -> str:
    """The current date and time on the server."""
    return timezone.now().isoformat()


@tools.function
def visits(context: RequestContext) -> int:
    """How many times this browser has called this function (kept in Django's session)."""
    session = context.raw.session  # context.raw is Django's HttpRequest
    session["visits"] = session.get("visits", 0) + 1
    return session["visits"]


navai = Navai(NavaiConfig.from_env(), functions=tools)


# --- urls.py ---
def home(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"app": "my django site"})


urlpatterns = [
    path("", home),
    path("voice/", include(navai_urls(navai))),
]

# --- wsgi.py and asgi.py ---
application = get_wsgi_application()
asgi_application = get_asgi_application()
