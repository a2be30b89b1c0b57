"""The contracts every part of the project shares: result and error JSON (schemas), the error root and its
code -> status table (errors), and the models' self-description (metadata).

WHY a package of its own: the CLI, the services and training all speak these types, so they must import
with the core dependencies alone (pydantic) and import nothing of the services, the CLI or training;
tests/test_import_graph.py fails when a contract module imports any other first-party module.
"""
