"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Bad input: missing folder, no faces, unknown name... (exit code 1)."""

    exit_code = 1


class ParamsError(UserError):
    """params.yaml is invalid (exit code 2, before any work)."""

    exit_code = 2


def quote(value: object, limit: int = 80) -> str:
    """`value` for an error message: repr'd (a newline stays on the line) and cut to `limit`
    characters. reprlib stops early, so a huge or deeply shared value (a YAML alias bomb) is
    never formatted whole."""
    import reprlib

    shortener = reprlib.Repr()  # (Python 3.11's takes no arguments)
    shortener.maxlevel, shortener.maxstring, shortener.maxother, shortener.maxlong = 3, limit, limit, limit
    try:
        short = shortener.repr(value)
    except ValueError:  # an int of over 4300 digits: Python refuses to format it
        short = f"<a {value.bit_length()}-bit integer>" if isinstance(value, int) else f"<a {type(value).__name__}>"
    return short if len(short) <= limit else short[: limit - 3] + "..."
