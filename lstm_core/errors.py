"""The one exception type the CLI turns into a clean one-line message."""


class UserError(Exception):
    """A problem the user can fix: a bad recipe, a missing file, a wrong flag.

    The CLI prints ``str(error)`` on one line and exits non-zero, with no
    traceback unless ``--debug`` is given.
    """


def not_utf8(path, error_type=UserError) -> UserError:
    """The error for a text file that failed to decode as UTF-8, naming its
    first bad line: the decoder's own position is an offset into whatever
    chunk it was given, which tells a user nothing. Raise it from the
    reader's ``except UnicodeDecodeError``."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return error_type(f"{path}:{number}: not UTF-8 text ({error.reason}: byte "
                                 f"{line[error.start]:#04x} at column {error.start + 1}); "
                                 f"save the file as UTF-8")
    return error_type(f"{path}: not UTF-8 text; save the file as UTF-8")
