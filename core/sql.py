"""Raw SQL where the ORM cannot say it in one statement (conditional updates, ``RETURNING``)."""

from django.db import connection


def first_row(sql: str, params) -> tuple | None:
    """The first row ``sql`` returns, or None: whether a conditional ``UPDATE ... RETURNING``
    touched its row, and what it left there."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()
