"""The API's OpenAPI 3.1 document, generated from the routes' pydantic models (spectree), and its reference page.

A route declares its models with :func:`documented`; the same models validate its requests (a problem is
a 400 through :func:`sync_api.web.validation.clear_message`, answered by the one error handler) and
describe it at ``GET /api/openapi.json``, which ``/api/docs`` renders for people. Responses are not
re-validated at run time (that would cost every request a second parse); ``make test`` fuzzes the running
API with schemathesis and checks that every answer conforms to the document.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Blueprint, Flask, jsonify, render_template, request
from pydantic import ValidationError
from spectree import Response, SecurityScheme, SpecTree
from spectree.models import InType, SecureType, SecuritySchemeData
from spectree.plugins.flask_plugin import FlaskPlugin

from antrian.errors import InvalidInput
from sync_api.web.schemas import ErrorBody
from sync_api.web.validation import MAX_ID, clear_message, json_object

#: The schemes of the document: the bearer token (``API_TOKEN``) and the admin pages' session cookie.
BEARER, SESSION = "bearerToken", "adminSession"
Security = list[dict[str, list[str]]]
TOKEN: Security = [{BEARER: []}]
TOKEN_OR_SESSION: Security = [{BEARER: []}, {SESSION: []}]
PUBLIC: Security = []


class _Plugin(FlaskPlugin):
    """spectree's Flask plugin, answering with the view's own response instead of re-validating it, and
    serving no document itself (:data:`bp` serves it at ``/api/openapi.json``, where spectree would skip
    every ``/api/`` route as its own)."""

    def register_route(self, app: Flask) -> None:
        pass

    def request_validation(self, request, query, json, form, headers, cookies):
        """Read a body as JSON whatever its ``Content-Type`` says (as the API always has), never as a form."""
        super().request_validation(request, query, None, None, headers, cookies)
        if json is not None:
            body = request.get_json(force=True, silent=True) if request.get_data() else {}
            request.context = request.context._replace(json=self.model_adapter.validate_obj(json, body))

    def validate_response(self, resp, resp_model, skip_validation, force_resp_serialize):
        return super().validate_response(resp, None, True, force_resp_serialize)


def _refuse(request: Any, response: Any, error: Exception | None, instance: Any, *args: Any) -> None:
    """spectree's ``before`` hook: a request the models refuse is an :class:`InvalidInput` (a clear 400)."""
    if isinstance(error, ValidationError):
        raise InvalidInput(clear_message(error))


_ID = {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID}


class _SpecTree(SpecTree):
    """spectree, with what it cannot say itself: path ids are ``int64`` (spectree says ``int32``), and a
    body whose model requires nothing may be left out."""

    def _generate_spec(self) -> dict[str, Any]:
        document = super()._generate_spec()
        schemas = document["components"]["schemas"]
        for operations in document["paths"].values():
            for operation in operations.values():
                for parameter in operation.get("parameters", []):
                    if parameter["in"] == "path" and parameter["schema"].get("format") == "int32":
                        parameter["schema"] = dict(_ID)
                body = operation.get("requestBody")
                if body:
                    reference = body["content"]["application/json"]["schema"].get("$ref", "")
                    if not schemas.get(reference.rpartition("/")[2], {}).get("required"):
                        body["required"] = False
        return document


spec = _SpecTree(
    "flask",
    backend=_Plugin,
    title="antrian sync-api",
    version="0.1.0",
    description=(
        "The internal HTTP API of antrian: student payment sync runs, tours, bookings and payments, failed "
        "jobs and queues. Errors are `{\"error\": \"<message>\"}` with a fitting 4xx (5xx: a dependency is "
        "down; 503 answers carry `Retry-After` when trying again soon will help)."
    ),
    path="api/openapi.json",
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda parent, child: child,
    page_templates={},
    mode="strict",
    validation_error_status=400,
    validation_error_model=ErrorBody,
    before=_refuse,
    annotations=True,
    security_schemes=[
        SecurityScheme(
            name=BEARER, data=SecuritySchemeData(
                type=SecureType.HTTP, scheme="bearer",
                description="an operator's token (`antrian tokens create`) or `API_TOKEN`; reading needs the "
                            "`viewer` role, changing anything `operator`, tokens `admin` (403 otherwise)",
            )
        ),
        SecurityScheme(
            name=SESSION,
            data=SecuritySchemeData(
                type=SecureType.API_KEY, field_in=InType.COOKIE, name="antrian_session",
                description="the admin pages' session, opened at `/admin/login` with the token",
            ),
        ),
    ],
    security=TOKEN[0],
)

#: Errors any route with a token may answer.
_COMMON = {"HTTP_401": ErrorBody, "HTTP_403": ErrorBody, "HTTP_429": ErrorBody, "HTTP_503": ErrorBody}


def documented(
    *,
    tags: tuple[str, ...],
    ok: dict[str, Any],
    errors: tuple[int, ...] = (),
    body: type | None = None,
    body_optional: bool = False,
    query: type | None = None,
    headers: type | None = None,
    security: Security = TOKEN,
    checks_itself: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Validate a route's ``body`` and ``query`` with these models and document it with its answers.

    ``ok`` maps ``HTTP_2xx`` to a model; ``errors`` lists the other statuses it may answer with an
    :class:`ErrorBody`; ``headers`` documents request headers (the route checks them). A body is first read
    as a JSON object (malformed JSON, or another JSON type, is a 400 that says so); an empty one is ``{}``
    when ``body_optional``. ``checks_itself``: the models only
    document the route, which reads and checks its input itself (the payment notification, whose signature
    covers the raw strings; the simulator, which is a 404 before anything when it is off).
    """
    answers = {**ok, **{f"HTTP_{status}": ErrorBody for status in errors}}
    answers.update(_COMMON if security else {"HTTP_503": ErrorBody})

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        validated = spec.validate(
            json=body, query=query, headers=headers, resp=Response(**answers), tags=list(tags), security=security,
            skip_validation=checks_itself,
        )(view)
        if body is None or checks_itself:
            return validated

        @wraps(validated)
        def read_body_first(*args: Any, **kwargs: Any) -> Any:
            if not body_optional or request.get_data():
                json_object()
            return validated(*args, **kwargs)

        return read_body_first

    return decorator


bp = Blueprint("openapi", __name__, url_prefix="/api")


@bp.get("/openapi.json")
def document():
    """The OpenAPI 3.1 document of every route (public: it holds no secret and no data, and clients are generated
    from it)."""
    return jsonify(spec.spec)


@bp.get("/docs")
def reference():
    """The document rendered for people: every route, its parameters, body and answers."""
    return render_template("api_reference.html", document=spec.spec)


def init_app(app: Flask) -> None:
    spec.register(app)
    app.register_blueprint(bp)
