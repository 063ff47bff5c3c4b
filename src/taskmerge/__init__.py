"""taskmerge: editing and merging fine-tuned models in weight space."""

from taskmerge.api import merge, method_names
from taskmerge.demo import Demo, load_demo
from taskmerge.models.linearized import LinearizedEncoder
from taskmerge.vectors.task_vector import TaskVector

__version__ = "0.1.0"

__all__ = [
    "Demo",
    "LinearizedEncoder",
    "TaskVector",
    "__version__",
    "load_demo",
    "merge",
    "method_names",
]
