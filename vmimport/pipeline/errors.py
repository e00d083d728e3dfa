"""Failures that end an import task, worded for the person who started it."""


class ImportFailure(Exception):
    """The task ends ``deleted`` with ``StatusMessage = "<kind>: <message>"``.

    ``kind`` is ``ClientError`` when the user can fix it (bad image, missing object) and
    ``ServerError`` when vmimport itself failed. Messages start with AWS's wording where AWS has
    one (so scripts matching on it keep working) and then say exactly what was found.
    """

    def __init__(self, message: str, kind: str = "ClientError"):
        super().__init__(message)
        self.message = message
        self.kind = kind

    @property
    def status_message(self) -> str:
        return f"{self.kind}: {self.message}"


class ImportCancelled(Exception):
    """The user cancelled the task (CancelImportTask); the worker stops at the next checkpoint."""
