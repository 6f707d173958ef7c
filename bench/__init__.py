"""faregate's overhead benchmark (issue #8). Run with `python -m bench` or `bench/run`.

Not part of the pytest suite: nothing here is collected by pytest (testpaths = tests).
"""
