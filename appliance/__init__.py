"""Offline screening appliance for low-resource clinics.

Decision support, not a diagnosis: every result this package produces is meant to be
reviewed by a clinician.
"""

__version__ = "0.1.0"
