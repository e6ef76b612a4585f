"""ductape-operator: one MessageBroker resource, five broker providers.

The package is split in layers (checked by import-linter, see `.importlinter`):
models and errors at the bottom, providers above them, then the Kubernetes
client module, the reconcile logic, and the kopf handlers on top. The
application-side client (`ductape_operator.messaging`) uses only the bottom
layers, so applications never import kopf or the Kubernetes client.
"""

__version__ = "0.1.0"
