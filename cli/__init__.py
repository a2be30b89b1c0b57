"""The ``deepfake`` command and the development process runner (``make up``): the top of the import graph.

WHY its own package: it drives every other one (the pipeline, the backends, Triton, the stack, training's
evaluation), so nothing imports it back; tests/test_import_graph.py checks there is no cycle.
"""
