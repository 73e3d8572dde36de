"""The one exception type users see: a problem they can fix, described so they can."""


class LipSyncError(Exception):
    """Bad input or set-up; the message says what went wrong and what to do about it."""
