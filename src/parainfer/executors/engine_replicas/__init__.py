"""Generation engines as replicas: a worker process or Ray actor that hosts one LLMEngine, behind a typed handle.
"""
