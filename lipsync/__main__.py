"""`python -m lipsync ...`"""

from .cli import _entry

_entry()
