"""Domain errors. Each has a stable ``code``; the API maps codes to HTTP statuses in one place
(``core.api_errors``), so services never speak HTTP."""


class DomainError(Exception):
    code = "error"
    message = "The request could not be completed."

    def __init__(self, message: str | None = None, **details):
        self.message = message or self.message
        self.details = details
        super().__init__(self.message)
