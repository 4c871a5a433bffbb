"""What a job's Ray actors need from the driver's disk, and how it reaches their nodes.

The driver (``plan``) looks at the predictor before the actors start:

* **code**: the modules ``Predictor.code_modules`` names (``--model module:function``) that no
  installed distribution holds (a ``.py`` file or a package folder of the driver's working
  folder), with the other modules of the same folder the driver imported (a helper the model
  module imports). Ray's runtime_env ``py_modules`` uploads each once to the cluster (its GCS,
  keyed by content) and every node unpacks it before the actor's process starts, ahead of the
  node's own ``sys.path``. A ``__main__`` function travels by value already (cloudpickle,
  ``models.python_callable.by_value``); the modules of its folder that it calls are shipped as above.
* **files**: the paths of ``Predictor.local_paths`` (a model directory ``parainfer train`` or
  ``export-onnx`` wrote) outside the installed locations (the Python prefix, site-packages,
  parainfer's own package, any installed distribution: a built-in model is never shipped).
  Up to ``limit_bytes`` in all (``PARAINFER_SHIP_LIMIT_MB``, default 512) they are read once
  and put in Ray's object store; an actor (``receive``) uses its node's own copy when the same
  path holds the same bytes there (SHA-256 over names, sizes and contents), and otherwise
  fetches the object (node to node, only then) and unpacks it under
  ``TMPDIR/parainfer-shipped/DIGEST/`` (kept for later jobs; ``Predictor.relocate`` points the
  predictor there). Above the limit nothing is put: each node must hold the path itself (same
  file names and sizes), and a node that does not stops the job with one line (``ShipError``)
  naming the path, its size, the limit and the fix.
"""

from __future__ import annotations

import functools
import hashlib
import os
import site
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LIMIT_ENV = "PARAINFER_SHIP_LIMIT_MB"
DEFAULT_LIMIT_MB = 512  # Ray's own ceiling for a runtime_env package (its GCS message size)
CACHE_DIR = "parainfer-shipped"


class ShipError(RuntimeError):
    """A node lacks a path the model reads, and it is too large to ship (the message says which
    path, its size, the limit, the node and the fix)."""


@dataclass(slots=True)
class ShippedPath:
    """One file or directory the model reads.

    Attributes:
        path: its absolute path on the driver.
        files: (path relative to ``path``, size in bytes) of each file, sorted ("" for a file).
        digest: SHA-256 hex over names, sizes and contents (``tree_digest``); None when over
            the limit (not read, not shipped).
        blob: [ObjectRef of {relative path: bytes}] (in a list, so Ray does not fetch it with
            the call), or None when not shipped.
    """

    path: str
    files: list[tuple[str, int]]
    digest: str | None = None
    blob: list[Any] | None = None

    @property
    def size(self) -> int:
        return sum(size for _, size in self.files)


@dataclass(slots=True)
class Shipment:
    """What ``plan`` found: ``py_modules`` (paths for Ray's runtime_env) and ``paths``."""

    py_modules: list[str] = field(default_factory=list)
    paths: list[ShippedPath] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """For the report: the modules sent, and each path with its bytes and whether it was put."""
        return {"modules": list(self.py_modules),
                "paths": [{"path": p.path, "bytes": p.size, "shipped": p.blob is not None} for p in self.paths]}


def limit_bytes() -> int:
    """The shipping limit in bytes (``PARAINFER_SHIP_LIMIT_MB`` MiB, default 512).

    Raises:
        UsageError: the variable is not a number >= 0.
    """
    from parainfer.errors import UsageError

    raw = os.environ.get(LIMIT_ENV, str(DEFAULT_LIMIT_MB))
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not mb >= 0:
        raise UsageError(f"{LIMIT_ENV} must be a number of MiB >= 0, got {raw!r}")
    return int(mb * 2**20)


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


# -- what is installed (never shipped) -------------------------------------------------------
def _prefixes() -> list[Path]:
    import parainfer

    places = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(), site.getusersitepackages(),
              *parainfer.__path__}
    return [Path(p).resolve() for p in places if p]


@functools.lru_cache(maxsize=1)
def _distributions() -> frozenset[str]:
    """Top-level import names of the installed distributions (slow: ~0.5 s; asked only for a
    candidate outside the prefixes)."""
    import importlib.metadata

    return frozenset(importlib.metadata.packages_distributions())


def _top_level_of(path: Path) -> str | None:
    """The imported top-level module or package whose file or folder holds ``path``, or None."""
    for name, module in list(sys.modules.items()):
        if "." in name or module is None:
            continue
        for where in getattr(module, "__path__", None) or []:
            if path == Path(where).resolve() or Path(where).resolve() in path.parents:
                return name
    return None


def installed(path: str | os.PathLike, prefixes: list[Path] | None = None) -> bool:
    """True when ``path`` lies in the Python installation (prefix, site-packages, parainfer's
    package) or in an imported package of an installed distribution (editable ones included):
    every node has it (the cluster runs the same environment on every node, docs/cluster.md)."""
    p = Path(path).resolve()
    if any(p == root or root in p.parents for root in prefixes or _prefixes()):
        return True
    top = _top_level_of(p)
    return top is not None and top in _distributions()


def _module_source(name: str) -> Path | None:
    """The file (single-file module) or folder (package) of top-level module ``name``."""
    module = sys.modules.get(name)
    if module is None:
        return None
    paths = list(getattr(module, "__path__", None) or [])
    if len(paths) == 1:
        return Path(paths[0]).resolve()
    origin = getattr(module, "__file__", None)
    return Path(origin).resolve() if origin and not paths else None


def module_sources(predictor: Any) -> list[str]:
    """The paths to send as runtime_env ``py_modules``: each module ``predictor.code_modules()``
    names that is not installed (its top-level package folder, or its file), and every other
    imported top-level module of the same folder that is not installed either."""
    prefixes = _prefixes()
    folders: set[Path] = set()
    for name in predictor.code_modules():
        top = name.split(".")[0]
        if top == "__main__":  # by value; the modules beside the script may be called from it
            main = getattr(sys.modules.get("__main__"), "__file__", None)
            folders.add(Path(main).resolve().parent if main else Path.cwd().resolve())
            continue
        source = _module_source(top)
        if source is not None and not installed(source, prefixes) and top not in _distributions():
            folders.add(source.parent)
    found = []
    for name in sorted(sys.modules):
        if "." in name or name == "__main__":
            continue
        source = _module_source(name)
        if (source is not None and source.parent in folders and (source.is_dir() or source.suffix == ".py")
                and not installed(source, prefixes) and name not in _distributions()):
            found.append(str(source))
    return found


# -- files -------------------------------------------------------------------------------------
def tree(path: str | os.PathLike) -> list[tuple[str, int]]:
    """(relative path, size) of every file under ``path`` (symbolic links followed), sorted;
    [("", size)] for a file."""
    root = Path(path)
    if root.is_file():
        return [("", root.stat().st_size)]
    out = []
    for folder, _, names in os.walk(root, followlinks=True):
        for name in names:
            full = Path(folder, name)
            if full.is_file():
                out.append((full.relative_to(root).as_posix(), full.stat().st_size))
    return sorted(out)


def tree_digest(path: str | os.PathLike, files: list[tuple[str, int]]) -> str:
    """SHA-256 hex over each file's relative path, size and bytes, in ``files``' order."""
    h = hashlib.sha256()
    for rel, size in files:
        h.update(f"{rel}\0{size}\0".encode())
        with open(Path(path, rel) if rel else path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def read_tree(path: str | os.PathLike, files: list[tuple[str, int]]) -> dict[str, bytes]:
    """{relative path: bytes} of ``files`` under ``path``."""
    return {rel: Path(path, rel).read_bytes() if rel else Path(path).read_bytes() for rel, _ in files}


def local_paths(predictor: Any) -> list[Path]:
    """The predictor's existing local paths outside the installed locations, absolute (symbolic
    links resolved), outermost only. The predictor is pointed at those absolute forms (an actor's
    working folder is not the driver's)."""
    prefixes = _prefixes()
    raw = [Path(p) for p in predictor.local_paths() if Path(p).exists()]
    kept: list[Path] = []
    for p in sorted({p.resolve() for p in raw}, key=lambda p: len(p.parts)):
        if not any(k == p or k in p.parents for k in kept) and not installed(p, prefixes):
            kept.append(p)
    absolute = {p: p.resolve() for p in raw if p != p.resolve() and any(k == p.resolve() or k in p.resolve().parents
                                                                          for k in kept)}
    if absolute:
        predictor.relocate(absolute)
    return kept


def check_modules(modules: list[str], limit: int | None = None) -> int:
    """Bytes of the ``modules`` to send (``module_sources``); call before ``ray.init`` uploads them.

    Raises:
        UsageError: they are over ``limit`` (default ``limit_bytes()``): install them as a
            package on every node instead.
    """
    from parainfer.errors import UsageError

    limit = limit_bytes() if limit is None else limit
    code = sum(size for m in modules for _, size in tree(m))
    if code > limit:
        raise UsageError(f"the model's modules ({', '.join(modules)}) are {mib(code)}, over the {mib(limit)} "
                         f"parainfer sends to Ray nodes ({LIMIT_ENV}): install them as a package on every node "
                         "instead")
    return code


def plan(predictor: Any, modules: list[str], limit: int | None = None) -> Shipment:
    """Find what ``predictor``'s actors need from this machine and put the files in Ray's object
    store (driver side, connected to Ray). ``modules``: the ``module_sources`` the job's runtime
    env sends (Ray uploads local ``py_modules`` only at the job level: ``ray.init``). ``limit``:
    bytes shipped in all (default ``limit_bytes()``); paths beyond it are listed unshipped
    (``receive`` checks the nodes hold them).

    Raises:
        UsageError: the modules are over the limit (``check_modules``), or
            ``PARAINFER_SHIP_LIMIT_MB`` is bad.
    """
    import ray


    limit = limit_bytes() if limit is None else limit
    shipment = Shipment(py_modules=list(modules))
    budget = limit - check_modules(modules, limit)
    for p in local_paths(predictor):
        files = tree(p)
        item = ShippedPath(str(p), files)
        if item.size <= budget:
            data = read_tree(p, files)
            item.digest = tree_digest(p, files)
            item.blob = [ray.put(data)]
            budget -= item.size
        shipment.paths.append(item)
    return shipment


def receive(predictor: Any, paths: list[ShippedPath], node: str) -> list[str]:
    """Make each of ``paths`` present on this node (actor side, before ``predictor.load``): keep
    the node's own copy when it matches, else fetch and unpack the shipped one and relocate the
    predictor to it. Returns the driver paths fetched here.

    Raises:
        ShipError: a path over the limit (not shipped) is missing here or differs (file names
            and sizes), naming ``node``.
    """
    moved: dict[Path, Path] = {}
    for item in paths:
        if _present(item):
            continue
        if item.blob is None:
            raise ShipError(f"node {node} does not have {item.path} ({mib(item.size)}, as the driver does) and it is "
                            f"over the {mib(limit_bytes())} that parainfer sends to Ray nodes ({LIMIT_ENV}): put it "
                            "on storage every node mounts at the same path, or copy it to that path on every node "
                            "(docs/cluster.md, \"What is shipped\")")
        moved[Path(item.path)] = _unpack(item)
    if moved:
        predictor.relocate(moved)
    return [str(p) for p in moved]


def _present(item: ShippedPath) -> bool:
    if not os.path.exists(item.path):
        return False
    try:
        files = tree(item.path)
        if files != item.files:
            return False
        return item.digest is None or tree_digest(item.path, files) == item.digest
    except OSError:
        return False


def _unpack(item: ShippedPath) -> Path:
    """Unpack ``item``'s blob under TMPDIR/parainfer-shipped/DIGEST/NAME once per node (a
    folder renamed into place when complete, so actors of one node never see half of it)."""
    import ray

    assert item.digest is not None and item.blob is not None
    name = Path(item.path).name
    root = Path(tempfile.gettempdir(), CACHE_DIR)
    done = root / item.digest[:32]
    if not (done / name).exists():
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{item.digest[:12]}-", dir=root))
        data: dict[str, bytes] = ray.get(item.blob[0])
        for rel, content in data.items():
            target = staging / name / rel if rel else staging / name
            if ".." in Path(rel).parts:
                raise ValueError(f"bad shipped file name {rel!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        try:
            os.rename(staging, done)
        except OSError:  # another actor of this node put it there first
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return done / name


def ship_error(error: BaseException) -> str | None:
    """The ShipError message inside a Ray task error, or None when ``error`` is another error."""
    for e in (error, getattr(error, "cause", None)):
        if isinstance(e, ShipError):
            return str(e.args[0]) if e.args else str(e)
    return None
