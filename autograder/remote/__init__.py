"""Where submission code runs: a sandboxed worker, and the narrow protocol the tests use to reach it.

    protocol.py   the wire format and the worker itself (standalone: the sandbox binds this file alone)
    client.py     the trusted side: sandboxes, one forked worker per test, proxies, shared-memory tensors
    isolation.py  bubblewrap, else namespaces (unshare + setpriv), else a plain process; which is in force

docs/grading.md says what each level covers and what it does not.
"""
