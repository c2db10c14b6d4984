"""The one exception type users see: a message that names the problem and the fix."""


class PrunekitError(Exception):
    """Bad input or a failed precondition, phrased for the user.

    The CLI prints the message without a traceback and exits with status 2.
    """
