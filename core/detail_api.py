"""What the APIs of the things a person keeps (alert rules, report schedules) share: one
object's GET, PUT, PATCH and DELETE, its schema, and the model's validation as the API's 400."""

from django.core.exceptions import ValidationError as ModelValidationError
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView


def error_responses(*, invalid: str, forbidden: str, not_found: str) -> dict:
    """The 400, 401, 403 and 404 answers, as the schema describes them."""
    return {
        400: OpenApiResponse(description=invalid),
        401: OpenApiResponse(description="Not authenticated."),
        403: OpenApiResponse(description=forbidden),
        404: OpenApiResponse(description=not_found),
    }


def saved(service, **arguments):
    """What ``service(**arguments)`` saved; the model's ValidationError is a 400."""
    try:
        return service(**arguments)
    except ModelValidationError as error:
        raise ValidationError(error.message_dict) from None


def detail_schemas(*, tags, operations: str, noun: str, output, request, errors, deleted: str):
    """A ``DetailApi``'s methods in the schema (for ``extend_schema_view``): ``operations``
    prefixes their ids, ``noun`` names one object ("an alert rule"), ``deleted`` is the summary
    of DELETE."""
    answers = {200: output, **errors}
    return {
        "get": extend_schema(
            tags=tags,
            operation_id=f"{operations}_retrieve",
            summary=noun[0].upper() + noun[1:],
            responses=answers,
        ),
        "put": extend_schema(
            tags=tags,
            operation_id=f"{operations}_update",
            summary=f"Replace {noun}",
            request=request,
            responses=answers,
        ),
        "patch": extend_schema(
            tags=tags,
            operation_id=f"{operations}_partial_update",
            summary=f"Change some fields of {noun}",
            request=request(partial=True),
            responses=answers,
        ),
        "delete": extend_schema(
            tags=tags,
            operation_id=f"{operations}_destroy",
            summary=deleted,
            responses={204: None, **errors},
        ),
    }


class DetailApi(APIView):
    # One object among those the caller keeps (``kept``), found by the URL's
    # ``lookup_url_kwarg``; out of reach is a 404 saying ``not_found``. PUT and PATCH validate
    # with ``input_serializer``, ``apply`` the input and ``save``; the subscription cannot
    # change (``moving_refused``). A subclass names the services in ``save`` and
    # ``delete_object``, and ``documented`` the rest of ``detail_schemas``' arguments.
    # (A comment, not a docstring: the schema would show it as every operation's description.)

    lookup_url_kwarg: str
    input_serializer: type
    output_serializer: type
    not_found: str
    moving_refused: str
    documented: dict

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        schemas = detail_schemas(
            output=cls.output_serializer, request=cls.input_serializer, **cls.documented
        )
        extend_schema_view(**schemas)(cls)

    def kept(self, request):
        raise NotImplementedError

    def apply(self, request, found, data: dict, *, partial: bool) -> None:
        raise NotImplementedError

    def save(self, found, actor):
        raise NotImplementedError

    def delete_object(self, found, actor) -> None:
        raise NotImplementedError

    def find(self, request, object_id: int):
        found = self.kept(request).filter(pk=object_id).first()
        if found is None:
            raise NotFound(self.not_found)
        return found

    def _found(self, request):
        return self.find(request, self.kwargs[self.lookup_url_kwarg])

    def get(self, request, **url):
        return Response(self.output_serializer(self._found(request)).data)

    def put(self, request, **url):
        return self._update(request, partial=False)

    def patch(self, request, **url):
        return self._update(request, partial=True)

    def _update(self, request, *, partial: bool) -> Response:
        found = self._found(request)
        serializer = self.input_serializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if data.get("subscription") not in (None, found.subscription_id):
            raise ValidationError({"subscription": [self.moving_refused]})
        self.apply(request, found, data, partial=partial)
        saved(self.save, found=found, actor=request.user)
        return Response(self.output_serializer(self.find(request, found.pk)).data)

    def delete(self, request, **url):
        self.delete_object(self._found(request), request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)
