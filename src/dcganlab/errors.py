"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Bad input: missing folder, no faces, unknown name... (exit code 1)."""

    exit_code = 1


class ParamsError(UserError):
    """params.yaml is invalid (exit code 2, before any work)."""

    exit_code = 2
