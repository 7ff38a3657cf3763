"""nbval runs each notebook as a test file; report how long each one took.

It lives at the repository root, not in notebooks/, so that every .py in
notebooks/ is a jupytext notebook.
"""

from collections import defaultdict

_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    notebook = report.nodeid.split("::")[0]
    if report.when == "call" and notebook.endswith(".ipynb"):
        _seconds[notebook] += report.duration


def pytest_terminal_summary(terminalreporter):
    if not _seconds:
        return
    terminalreporter.section("notebook run times")
    for name, seconds in sorted(_seconds.items()):
        terminalreporter.write_line(f"{seconds:7.1f} s  {name}")
    terminalreporter.write_line(f"{sum(_seconds.values()):7.1f} s  all notebooks")
