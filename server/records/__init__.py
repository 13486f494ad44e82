"""What the service knows about videos, analyses and quota, apart from how it is stored.

``model`` holds the frozen records, ``ports`` the repository protocols the pipeline
and the analysis workers depend on, ``memory`` an in-process implementation for
unit tests of pure logic. ``server/db`` is the SQL adapter behind the same ports.
"""
