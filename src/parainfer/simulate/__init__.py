"""The scale simulator (``parainfer simulate``): the real scheduling policies and shard plan against simulated workers.
"""
