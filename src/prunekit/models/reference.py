"""User models by reference: ``path/to/file.py:Class``, ``package.module:factory``, or a model of a library,
``timm:resnet18d`` / ``torchvision:resnet18`` (see :data:`LIBRARIES`; the library and its version are recorded).

A reference names a constructor (an ``nn.Module`` class or a function returning a module) and is stored
in checkpoints as ``arch = {"ref": REF, "kwargs": {...}}`` beside the per-layer channel counts, the way
registry models store ``{"name", "kwargs"}``. Rebuilding a model runs exactly this and nothing else:
import the file or module (its top-level code runs, as for any import), get the named attribute, call it
with the stored keyword arguments. Checkpoints never hold pickled code or modules.

File paths are stored **as given** (``--model models/net.py:Net`` stores ``models/net.py``), not made
absolute: a checkpoint then keeps working in another clone of the project or on another machine, and an
absolute path is stored when the user gives one. When rebuilding, a relative path is tried from the
current working directory, then from each ``search_dirs`` folder (the checkpoint's own folder); an
absolute path that no longer exists is tried by its file name in those folders. A file is imported on
its own (its folder is not put on ``sys.path``); code spread over several files belongs in a package,
named as ``package.module:factory``.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable, Iterable

from torch import nn

from prunekit.errors import PrunekitError

USER_MODULE_PREFIX = "prunekit_user_"
_FILE_MODULES: dict[str, ModuleType] = {}  # resolved file path -> module imported from it
_FILE_OF_MODULE: dict[str, str] = {}  # module name -> the path it was imported by (as given)
_FORMS = "path/to/file.py:ClassName or package.module:factory"


def is_reference(text: object) -> bool:
    """True for ``target:attribute`` (registry names never hold a colon)."""
    return isinstance(text, str) and ":" in text


def parse_model_kwargs(text: str | dict | None) -> dict:
    """The keyword arguments ``--model-kwargs`` gives: a JSON object (``'{"width": 8}'``); None → ``{}``."""
    if text is None or text == "":
        return {}
    if isinstance(text, dict):
        return as_json_kwargs(text, "--model-kwargs")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise PrunekitError(f"--model-kwargs {text!r} is not valid JSON ({exc}); "
                            """give a JSON object, e.g. --model-kwargs '{"width": 8}'""") from None
    if not isinstance(value, dict):
        raise PrunekitError(f"--model-kwargs must be a JSON object of argument names to values, got "
                            f"{type(value).__name__} {text!r}; e.g. --model-kwargs '{{\"width\": 8}}'")
    return value


def as_json_kwargs(kwargs: dict, what: str) -> dict:
    """``kwargs`` after a JSON round trip (tuples become lists), or PrunekitError when not JSON types."""
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise PrunekitError(f"keyword arguments of {what} must be a dict with string keys, got {kwargs!r:.100}")
    try:
        return json.loads(json.dumps(kwargs))
    except (TypeError, ValueError) as exc:
        raise PrunekitError(f"keyword arguments of {what} must be JSON types (numbers, strings, lists, "
                            f"dicts): {exc}") from None


def resolve_model(ref: str, num_classes: int | None = None, kwargs: dict | None = None) -> nn.Module:
    """A freshly initialised model from a registry name or a reference, carrying ``model.arch``.

    A registry name goes to :func:`prunekit.models.create_model` (``num_classes`` default 10). For a
    reference, ``num_classes`` is passed only when the constructor has a parameter of that name and
    ``kwargs`` does not set it; whatever is passed is recorded in ``model.arch["kwargs"]``.
    """
    from prunekit.models.registry import create_model

    kwargs = dict(kwargs or {})
    if not is_reference(ref):
        if isinstance(ref, str) and (ref.endswith(".py") or "/" in ref):
            raise PrunekitError(f"--model {ref!r} names a file but no class: use {ref}:ClassName")
        return create_model(ref, num_classes=num_classes or 10, **kwargs)
    constructor, used = load_constructor(ref)
    if num_classes is not None and "num_classes" not in kwargs and _accepts(constructor, "num_classes"):
        kwargs["num_classes"] = num_classes
    return _construct(constructor, used, kwargs)


def model_from_reference(ref: str, kwargs: dict | None = None, search_dirs: Iterable[str | Path] = ()) -> nn.Module:
    """Call the constructor ``ref`` names with ``kwargs``; the model gets ``arch = {"ref", "kwargs"}``.

    ``search_dirs``: extra folders a file path is tried in (see the module docstring). When the file is
    found there, ``arch["ref"]`` holds the path that worked, so a checkpoint saved from it loads again.
    """
    constructor, used = load_constructor(ref, search_dirs)
    return _construct(constructor, used, dict(kwargs or {}))


#: Model libraries named as ``library:model`` (optional extras ``prunekit[timm]``, ``prunekit[torchvision]``).
LIBRARIES = ("timm", "torchvision")


def load_constructor(ref: str, search_dirs: Iterable[str | Path] = ()) -> tuple[Callable, str]:
    """The callable ``ref`` names and the reference as found (file path possibly re-located)."""
    target, attribute = parse_reference(ref)
    if target in LIBRARIES:
        return library_constructor(target, attribute), ref
    if _is_file(target):
        path = _find_file(target, ref, search_dirs)
        module, used = _import_file(path), f"{path}:{attribute}"
    else:
        module, used = _import_module(target), ref
    value = module
    for part in attribute.split("."):
        if not hasattr(value, part):
            raise PrunekitError(f"{target} has no attribute '{attribute}' (it defines: {_defined(module)}); "
                                f"check the name after the colon in --model {ref}")
        value = getattr(value, part)
    if not callable(value):
        raise PrunekitError(f"{ref} is an object of type {type(value).__name__}, not a class or function: name an nn.Module "
                            "class or a function that returns one")
    return value, used


def parse_reference(ref: str) -> tuple[str, str]:
    """``(target, attribute)`` of ``target:attribute``; PrunekitError naming the accepted forms."""
    target, _, attribute = str(ref).rpartition(":")
    if not target or not attribute or not all(p.isidentifier() for p in attribute.split(".")):
        raise PrunekitError(f"model reference {ref!r} is malformed: use {_FORMS}")
    return target, attribute


def reference_of(cls: type) -> str | None:
    """An importable reference to class ``cls``, or None when it cannot be named for import.

    Classes of modules imported by path (:func:`load_constructor`) and of a ``__main__`` script get the
    file path; classes of ``torch`` itself (containers such as ``nn.Sequential``, whose constructor needs
    the layers) and classes defined inside functions get None.
    """
    module_name, qualname = cls.__module__, cls.__qualname__
    if "<locals>" in qualname or module_name.split(".")[0] in ("torch", "builtins"):
        return None
    if module_name in _FILE_OF_MODULE:
        return f"{_FILE_OF_MODULE[module_name]}:{qualname}"
    if module_name == "__main__":
        file = getattr(sys.modules.get("__main__"), "__file__", None)
        return f"{file}:{qualname}" if file and str(file).endswith(".py") else None
    return f"{module_name}:{qualname}"


def library_constructor(library: str, name: str) -> Callable:
    """A constructor ``(num_classes=None, **kwargs)`` of model ``name`` of ``library`` (timm: ``create_model``
    with ``pretrained=False`` unless kwargs say otherwise, weights then from the HF Hub; torchvision:
    ``get_model`` with ``weights=None`` unless given). Raises PrunekitError when the library cannot be imported
    (naming the extra to install) or has no such model (naming close ones)."""
    module = _import_library(library)
    try:
        names = list(module.list_models() if library == "timm" else module.models.list_models())
    except Exception as exc:  # an old or broken install
        raise PrunekitError(f"{library} cannot list its models ({type(exc).__name__}: {str(exc)[:100]}); install a "
                            f"current {library}") from None
    if name not in names and not (library == "timm" and module.is_model(name)):
        close = difflib.get_close_matches(name, names, n=3)
        raise PrunekitError(f"{library} has no model '{name}'" + (f"; did you mean {', '.join(close)}?" if close else
                                                                   f"; list them with {library}.list_models()"))

    def build(num_classes: int | None = None, **kwargs) -> nn.Module:
        extra = {} if num_classes is None else {"num_classes": num_classes}
        pretrained = kwargs.get("pretrained") if library == "timm" else kwargs.get("weights")
        try:
            if library == "timm":
                return module.create_model(name, **{"pretrained": False, **kwargs, **extra})
            return module.models.get_model(name, **{"weights": None, **kwargs, **extra})
        except Exception as exc:
            if not pretrained:
                raise
            raise PrunekitError(pretrained_failure(library, name, exc)) from None

    build.library_version = f"{library} {getattr(module, '__version__', '?')}"
    return build


def pretrained_failure(library: str, name: str, exc: Exception) -> str:
    """The one-line error for a library model whose pretrained weights did not load (offline, no hub client, a
    class count the weights do not have): what failed, and the way that needs no network (``--weights FILE``)."""
    first = (str(exc).strip().splitlines() or [""])[0][:160]
    fix = ("the weights classify 1000 ImageNet classes: add --num-classes 1000, or load your own file with "
           "--weights FILE" if "num_classes" in str(exc) else
           f"offline or no hub client? download the weights once and pass them as --weights FILE (a state dict) "
           f"instead of asking {library} for them")
    return f"{library}:{name}: loading its pretrained weights failed ({type(exc).__name__}: {first}); {fix}"


def _import_library(library: str) -> ModuleType:
    try:
        return importlib.import_module(library)
    except ModuleNotFoundError:
        raise PrunekitError(f"--model {library}:NAME needs {library}: pip install 'prunekit[{library}]' (CPU-only "
                            "torch: install torchvision from https://download.pytorch.org/whl/cpu, see the README)"
                            ) from None
    except Exception as exc:  # e.g. a torchvision built for another torch: undefined symbol torchvision::nms
        raise PrunekitError(f"importing {library} raised {type(exc).__name__}: {str(exc)[:200]}; install the "
                            f"{library} build that matches your torch (CPU-only torch: torchvision from "
                            "https://download.pytorch.org/whl/cpu)") from None


def _construct(constructor: Callable, ref: str, kwargs: dict) -> nn.Module:
    kwargs = as_json_kwargs(kwargs, ref)
    try:
        model = constructor(**kwargs)
    except PrunekitError:  # a library constructor's own one-line error
        raise
    except Exception as exc:  # the user's constructor: any exception is theirs to see
        raise PrunekitError(f"{ref}(**{json.dumps(kwargs)}) raised {type(exc).__name__}: {exc}"
                            f"{_signature_hint(constructor)}; check --model-kwargs") from None
    if not isinstance(model, nn.Module):
        raise PrunekitError(f"{ref} returned an object of type {type(model).__name__}, not a torch.nn.Module: name an nn.Module "
                            "class or a function that returns one")
    model.arch = {"ref": ref, "kwargs": kwargs}
    if hasattr(constructor, "library_version"):
        model.arch["library"] = constructor.library_version  # recorded in checkpoints beside the reference
    return model


def _is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def _find_file(target: str, ref: str, search_dirs: Iterable[str | Path]) -> Path:
    given = Path(target)
    tail = Path(given.name) if given.is_absolute() else given
    candidates = [given, *(Path(d) / tail for d in search_dirs)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(dict.fromkeys(str(c) for c in candidates))
    raise PrunekitError(f"model file {target} not found (tried {tried}); restore it, or point at it again with "
                        f"--model path/to/{given.name}:{ref.rpartition(':')[2]}")


def _import_file(path: Path) -> ModuleType:
    key = str(path.resolve())
    if key in _FILE_MODULES:
        return _FILE_MODULES[key]
    name = f"{USER_MODULE_PREFIX}{path.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PrunekitError(f"{path} cannot be imported as Python code: name a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # classes must be findable by module name (deepcopy, torch.fx, pickling)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise PrunekitError(f"importing {path} raised {type(exc).__name__}: {exc}") from None
    _FILE_MODULES[key], _FILE_OF_MODULE[name] = module, str(path)
    return module


def _import_module(target: str) -> ModuleType:
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise PrunekitError(f"cannot import module '{target}' ({exc}); install it or put its folder on "
                            "PYTHONPATH, or name a file: --model path/to/file.py:ClassName") from None
    except Exception as exc:
        raise PrunekitError(f"importing module '{target}' raised {type(exc).__name__}: {exc}") from None


def _defined(module: ModuleType) -> str:
    names = [n for n, v in vars(module).items() if not n.startswith("_") and callable(v)
             and getattr(v, "__module__", None) == module.__name__]
    return ", ".join(names[:12]) or "no classes or functions"


def _accepts(constructor: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(constructor).parameters
    except (TypeError, ValueError):
        return False


def _signature_hint(constructor: Callable) -> str:
    try:
        return f" (it takes {inspect.signature(constructor)})"
    except (TypeError, ValueError):
        return ""
