"""OpenAI's Files and Batches APIs on ``parainfer serve``: stores, routes, and the runner behind online requests.
"""
