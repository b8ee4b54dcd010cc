"""The `clipsearch` command line: serve, search, index folders, import and export collections.

A package of its own, above `service/`: the HTTP layer does not import it.
`python -m clipsearch` is the same command as `clipsearch`.
"""
