"""``zoo serve``: a drop-in server for TensorFlow Serving's REST API (gRPC, batching, metrics later).

Modules: :mod:`serving.config` (flags, ModelServerConfig), :mod:`serving.manager` (model
lifecycle), :mod:`serving.predict` (inference shared by every front end), :mod:`serving.tensors`
(JSON <-> tensor rules), :mod:`serving.rest` (the ASGI app), :mod:`serving.server`
(``ModelServer`` and ``main``).  TensorFlow is imported only when a model is loaded.
"""

from .config import ConfigError, ModelConfig, ServerConfig, VersionPolicy, parse_args
from .errors import Code, ServingError
from .manager import ServableManager, State, VersionStatus
from .predict import classify, predict, regress
from .server import ModelServer, ServerStartupError, main

__all__ = [
    "Code",
    "ConfigError",
    "ModelConfig",
    "ModelServer",
    "ServableManager",
    "ServerConfig",
    "ServerStartupError",
    "ServingError",
    "State",
    "VersionPolicy",
    "VersionStatus",
    "classify",
    "main",
    "parse_args",
    "predict",
    "regress",
]
