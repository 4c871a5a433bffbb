"""The HTTP layer every route shares: OpenAI-shaped errors, guards, body parsing, limits, middleware, uvicorn settings.
"""
