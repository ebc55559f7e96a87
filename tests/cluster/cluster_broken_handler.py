"""A handler module that imports in the supervisor (its early check passes) but fails in every
worker, like a deploy whose workers lack a dependency: a crash loop at import."""

import multiprocess

if multiprocess.current_process().name.startswith("cluster-worker"):
    raise ImportError("No module named 'missing_dependency' (simulated broken deploy)")


class Handler:
    pass
