"""Generation behind ``/v1/completions`` and ``/v1/chat/completions``: admission, routes, replica router, service.
"""
