"""Pages of results for APIViews, which DRF does not paginate by itself."""

from drf_spectacular.utils import inline_serializer
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


def paginated_response(*, results, serializer_class, request, view) -> Response:
    paginator = PageNumberPagination()
    page = paginator.paginate_queryset(results, request, view=view)
    return paginator.get_paginated_response(serializer_class(page, many=True).data)
