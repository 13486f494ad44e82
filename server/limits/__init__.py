"""Rate limits and concurrency caps: token buckets and capped sets of leases.

``port`` holds the two ports; ``memory`` the embedded (one-process) adapters and
``redis`` the shared ones that every replica enforces together.
"""
