"""The machine: devices, whether N replicas fit, the user cache folder, and the built-in datasets.
"""
