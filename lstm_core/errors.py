"""The one exception type the CLI turns into a clean one-line message."""


class UserError(Exception):
    """A problem the user can fix: a bad recipe, a missing file, a wrong flag.

    The CLI prints ``str(error)`` on one line and exits non-zero, with no
    traceback unless ``--debug`` is given.
    """
