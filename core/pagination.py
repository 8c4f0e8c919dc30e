"""Pages of results for APIViews, which DRF does not paginate by itself."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response


def page_of(item_serializer, *, component_name: str):
    """Documents a page of ``PageNumberPagination`` (APIViews are not paginated automatically)."""
    return inline_serializer(
        name=component_name,
        fields={
            "count": serializers.IntegerField(),
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": item_serializer(many=True),
        },
    )


def list_schema(item_serializer, *, component_name: str, errors: dict, **schema):
    """A paginated GET in the schema: a page of ``item_serializer`` (``page_of``), or one of
    ``errors``; ``schema`` is the rest of ``extend_schema``'s arguments."""
    return extend_schema(
        responses={200: page_of(item_serializer, component_name=component_name), **errors},
        **schema,
    )


def paginated_response(*, results, serializer_class, request, view) -> Response:
    paginator = PageNumberPagination()
    page = paginator.paginate_queryset(results, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)
