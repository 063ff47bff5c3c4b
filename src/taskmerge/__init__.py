"""taskmerge: editing and merging fine-tuned models in weight space."""

from taskmerge.api import merge, method_names
from taskmerge.models.linearized import LinearizedEncoder
from taskmerge.vectors.task_vector import TaskVector

__version__ = "0.1.0"

__all__ = ["LinearizedEncoder", "TaskVector", "__version__", "merge", "method_names"]
