"""The one C extension: the journal seals' hashing (bcd/journal/_chain.c: why, there). Optional: without a C
compiler, the Python headers or OpenSSL's (Debian: gcc python3-dev libssl-dev, in `make deps`) bcd installs and
hashes in Python. Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("bcd.journal._chain", ["bcd/journal/_chain.c"], libraries=["crypto"], optional=True)])
