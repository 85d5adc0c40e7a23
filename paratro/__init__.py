"""The composition root: the `paratro` command line, the demo and the sandbox.

They wire every other package together (the Celery workers, the HTTP API, the devnets), so they
live above all of them: api and workers never import this package, and it is the only one that
imports both.
"""
