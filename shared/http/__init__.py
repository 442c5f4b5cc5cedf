"""Outbound HTTP: the one checked way out of the process.

Owns the outbound policy for user-supplied URLs and the SSRF-safe client that re-checks every
resolved address (``outbound``), and the classification of upstream failures into the error tree
with one ``Retry-After`` parser and one OAuth-error sanitiser (``upstream``). Imports only ``kernel``.
"""
