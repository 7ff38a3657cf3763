"""Utilities shared by the package: files and paths.

``folders``  the one guarded way to replace an output folder or write a file whole
``paths``    how paths are printed (relative to the repository, or ``~``)
"""
