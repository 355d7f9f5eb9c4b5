"""The query side: query encoders, the search service, result links and the HTTP API.

Torch-free at import time: the in-process encoder loads its model class only when it is built.
"""
