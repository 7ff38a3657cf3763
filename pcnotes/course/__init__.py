"""The course's exercise checkers: each takes the learner's function and says what to fix.

    >>> from pcnotes import course
    >>> course.check_patchify(my_patchify)   # prints ✓ or ✗ with the mistake named, returns bool
"""

from pcnotes.course.checkers import *  # noqa: F401,F403
from pcnotes.course.checkers import CHECKERS, STUB_PHRASE  # noqa: F401
