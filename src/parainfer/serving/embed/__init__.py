"""Embeddings and classification behind ``/v1/embeddings`` and ``/v1/classify``: dynamic batcher, replica pool, service.
"""
