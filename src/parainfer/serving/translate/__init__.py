"""Translation behind ``/v1/translations``.
"""
