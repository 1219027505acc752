"""Build the Lambda zip: byte-reproducible, named by its content hash, wheels for the target platform.

Two halves:

* :class:`DependencyBuilder` installs the TruSTAR SDK and its dependencies for the *Lambda's*
  Python version and architecture (``pip install --platform ... --only-binary=:all:``), never for
  this machine. ``trustar`` is only published as an sdist (pure Python), so it is first turned into a
  wheel locally. The result is cached under a key made of (runtime, architecture, pinned
  requirements, recipe version): a second build, and every test after the first, is a directory
  read.
* :func:`build_package` adds the ``gdtrustar`` package straight from the source tree (so the Lambda
  runs the very code the CLI runs) and writes a zip whose bytes depend only on file names and
  contents: entries sorted, timestamps fixed at 1980-01-01, permissions fixed, one compression
  level. The same inputs therefore give the same SHA-256, which names the S3 object and lets a
  redeploy of unchanged code change nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from gdtrustar.errors import DeployError

RUNTIMES = {"python3.13": "3.13", "python3.12": "3.12"}
PLATFORMS = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}

#: The pinned dependency set the zip ships (package data, one ``name==version`` a line).
REQUIREMENTS_FILE = Path(__file__).with_name("lambda-requirements.txt")


def read_requirements(path: Path = REQUIREMENTS_FILE) -> tuple[str, ...]:
    """The requirement lines of ``path``, without comments and blank lines."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return tuple(line for line in lines if line)


#: Everything the SDK needs, pinned so that two machines build the same bytes.
REQUIREMENTS = read_requirements()
#: Published only as an sdist; built into a (pure-Python) wheel here before the platform install.
SDIST_ONLY = tuple(req for req in REQUIREMENTS if req.split("==")[0].strip().lower() == "trustar")
#: The Lambda runtime ships these; packaging them would only add megabytes.
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer", "jmespath"})
#: Bump when the way the dependency folder is made changes, so old caches are not reused.
RECIPE_VERSION = "1"

# Inside *.dist-info only these are kept: RECORD/INSTALLER/WHEEL/direct_url.json vary with the
# installer, its version and the local wheel path, and nothing reads them at run time.
_DIST_INFO_KEEP = frozenset({"METADATA", "top_level.txt", "entry_points.txt"})
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)
_ZIP_MODE = 0o100644 << 16
_ZIP_LEVEL = 6  # zlib's default: 4x faster than 9 on this zip (0.19 vs 0.81 s) for 0.5% more bytes
# bin/: console scripts with this machine's shebang; tests/: trustar's sdist installs its own tests.
_NOT_SHIPPED = frozenset({"bin", "tests", ".complete"})
_SOURCE_SUFFIXES = frozenset({".py", ".json", ".typed"})

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


@dataclasses.dataclass(frozen=True)
class BuildTarget:
    """The Lambda platform a package is built for."""

    runtime: str = "python3.13"
    architecture: str = "x86_64"

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise DeployError(f"unsupported runtime {self.runtime!r}; choose one of {', '.join(RUNTIMES)}")
        if self.architecture not in PLATFORMS:
            raise DeployError(f"unsupported architecture {self.architecture!r}; choose x86_64 or arm64")

    @property
    def python_version(self) -> str:
        """``3.13`` for ``python3.13``."""
        return RUNTIMES[self.runtime]

    @property
    def platform(self) -> str:
        """The manylinux tag pip selects binary wheels by."""
        return PLATFORMS[self.architecture]


@dataclasses.dataclass(frozen=True)
class LambdaPackage:
    """A built zip and the hash that names it."""

    data: bytes = dataclasses.field(repr=False)
    sha256: str

    @property
    def size(self) -> int:
        """Size in bytes of the zip."""
        return len(self.data)

    @property
    def filename(self) -> str:
        """A content-addressed name: equal names mean equal bytes."""
        return f"gdtrustar-{self.sha256[:20]}.zip"


def default_cache_dir() -> Path:
    """``$GDTRUSTAR_CACHE_DIR`` or ``$XDG_CACHE_HOME/gdtrustar`` (``~/.cache/gdtrustar``)."""
    explicit = os.environ.get("GDTRUSTAR_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gdtrustar"


class DependencyBuilder:
    """Installs :data:`REQUIREMENTS` for a target platform into a cached folder."""

    def __init__(
        self,
        cache_dir: Optional[Path] = None,
        requirements: tuple[str, ...] = REQUIREMENTS,
        run: Runner = subprocess.run,
        python: str = sys.executable,
    ) -> None:
        self.cache_dir = Path(cache_dir or default_cache_dir()) / "deps"
        self.requirements = requirements
        self._run = run
        self._python = python

    def cache_key(self, target: BuildTarget) -> str:
        """A short hash of everything that decides what the folder holds."""
        parts = [RECIPE_VERSION, target.runtime, target.architecture, *sorted(self.requirements)]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]

    def site_dir(self, target: BuildTarget) -> Path:
        """Return the installed dependencies for ``target``, building them on a cache miss."""
        final = self.cache_dir / f"{target.runtime}-{target.architecture}-{self.cache_key(target)}"
        if (final / ".complete").is_file():
            return final
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="build-", dir=self.cache_dir))
        try:
            self._install(target, work / "wheels", work / "site")
            (work / "site" / ".complete").write_text(self.cache_key(target))
            if final.exists():  # another process won the race; its result is as good as ours
                return final
            try:
                os.replace(work / "site", final)
            except OSError:  # ... or won it just now
                if not (final / ".complete").is_file():
                    raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return final

    def _install(self, target: BuildTarget, wheels: Path, site: Path) -> None:
        sdists = [req for req in self.requirements if req in SDIST_ONLY]
        if sdists:
            self._pip("wheel", "--no-deps", "--wheel-dir", str(wheels), *sdists)
        self._pip(
            "install", "--target", str(site), "--platform", target.platform,
            "--python-version", target.python_version, "--implementation", "cp",
            "--only-binary=:all:", "--no-compile", "--find-links", str(wheels), *self.requirements,
        )

    def _pip(self, *args: str) -> None:
        cmd = [self._python, "-m", "pip", *args, "--disable-pip-version-check", "--quiet"]
        result = self._run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout or "").strip().splitlines()[-3:]
            raise DeployError(f"pip {args[0]} failed for the Lambda package: {' / '.join(detail)}")


def _is_runtime_provided(rel: Path) -> bool:
    top = rel.parts[0]
    name = top.split("-")[0].lower() if top.endswith(".dist-info") else top.lower()
    return name in RUNTIME_PROVIDED


def dependency_files(site: Path) -> Iterator[tuple[str, Path]]:
    """Yield (archive name, path) for the installed dependencies worth shipping."""
    for path in site.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(site)
        if rel.parts[0] in _NOT_SHIPPED or "__pycache__" in rel.parts or path.suffix == ".pyc":
            continue
        if _is_runtime_provided(rel):
            continue
        if rel.parts[0].endswith(".dist-info") and len(rel.parts) == 2 and rel.name not in _DIST_INFO_KEEP:
            continue
        yield rel.as_posix(), path


def source_files(package_dir: Optional[Path] = None) -> Iterator[tuple[str, Path]]:
    """Yield (archive name, path) for the gdtrustar package in the source tree."""
    package_dir = package_dir or Path(__file__).resolve().parent.parent
    for path in package_dir.rglob("*"):
        if path.is_file() and path.suffix in _SOURCE_SUFFIXES and "__pycache__" not in path.parts:
            yield f"{package_dir.name}/{path.relative_to(package_dir).as_posix()}", path


def deterministic_zip(entries: Iterable[tuple[str, bytes]]) -> bytes:
    """Zip ``entries`` so that the bytes depend on names and contents only.

    Implementation note: zipfile stamps each entry with the file's mtime and mode, and the order
    of ``rglob`` depends on the file system; both would change the hash of identical code.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in sorted(entries, key=lambda item: item[0]):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.external_attr = _ZIP_MODE
            info.create_system = 3  # unix, so external_attr is read as a mode
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=_ZIP_LEVEL)
    return buffer.getvalue()


def build_package(
    target: BuildTarget,
    builder: Optional[DependencyBuilder] = None,
    package_dir: Optional[Path] = None,
) -> LambdaPackage:
    """Build the Lambda zip for ``target``: dependencies for that platform plus gdtrustar's source."""
    builder = builder or DependencyBuilder()
    site = builder.site_dir(target)
    files = dict(dependency_files(site))
    files.update(source_files(package_dir))
    data = deterministic_zip((name, path.read_bytes()) for name, path in files.items())
    return LambdaPackage(data=data, sha256=hashlib.sha256(data).hexdigest())
