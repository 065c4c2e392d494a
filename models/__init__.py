"""Tortoise models and the domain operations that change data, each one atomic.

nlp and models import neither bot nor handlers.
"""
