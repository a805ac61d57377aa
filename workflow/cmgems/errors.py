"""The one exception type for bad user input (files, config, arguments)."""


class CmgemsError(Exception):
    """Bad input: the message names the file, line or key at fault. The CLI prints it and exits 1."""
