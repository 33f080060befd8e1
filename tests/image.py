"""What the production image would hold, rebuilt from the Dockerfile without a Docker engine.

`image_python_path` replays the Dockerfile's WORKDIR, COPY (build context filtered
by .dockerignore) and `pip install .` steps into a temporary directory and returns
the import path a step's Python would have there. `import_in_image` then imports
modules and classes in a fresh interpreter that sees only that path plus the pinned
third-party stack (this venv's site-packages without the editable checkout).
"""

import fnmatch
import json
import os
import shlex
import shutil
import subprocess
import sys
from typing import Dict, List, Sequence

# Drops the editable install's finder, so nothing resolves to the checkout, then imports each name.
_PROBE = r"""
import importlib, json, sys
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
root, names, own = sys.argv[1], json.loads(sys.argv[2]), set(json.loads(sys.argv[3]))
failures = {}
for name in names:
    module, _, attribute = name.partition(":")
    try:
        loaded = importlib.import_module(module)
        if attribute:
            getattr(loaded, attribute)
        origin = getattr(loaded, "__file__", "") or ""
        if module.split(".")[0] in own and not origin.startswith(root):
            failures[name] = f"imported from {origin}, outside the image"
    except Exception as error:
        failures[name] = f"{type(error).__name__}: {error}"
print(json.dumps(failures))
"""


def _instructions(dockerfile: str) -> List[List[str]]:
    """Dockerfile instructions as word lists, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        current += " " + line.rstrip("\\")
        if not line.endswith("\\"):
            lines.append(shlex.split(current.strip(), posix=True))
            current = ""
    return lines


def _ignored(path: str, patterns: Sequence[str]) -> bool:
    """.dockerignore semantics for this project's style: patterns in order, `!` re-includes, last match wins."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern[1:] if negate else pattern
        pattern = pattern.rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.replace("**/", "")) for p in prefixes):
            ignored = not negate
    return ignored


def _copy(context: str, source: str, target: str, patterns: Sequence[str]) -> None:
    base = os.path.join(context, source)
    if os.path.isfile(base):
        if not _ignored(source, patterns):
            os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
            shutil.copy2(base, target)
        return
    for folder, _, files in os.walk(base):
        for name in files:
            relative = os.path.relpath(os.path.join(folder, name), context)
            if _ignored(relative, patterns):
                continue
            destination = os.path.join(target, os.path.relpath(os.path.join(folder, name), base))
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            shutil.copy2(os.path.join(folder, name), destination)


def image_python_path(dockerfile: str, context: str, root: str) -> List[str]:
    """Replays the final stage's WORKDIR/COPY/`pip install .`/ENV PYTHONPATH under `root`; returns sys.path additions."""
    with open(os.path.join(context, ".dockerignore"), encoding="utf-8") as f:
        patterns = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    stages = [i for i, words in enumerate(_instructions(dockerfile)) if words[0].upper() == "FROM"]
    instructions = _instructions(dockerfile)[stages[-1]:]
    workdir, path, site = "/", [], os.path.join(root, "site-packages")
    for words in instructions:
        keyword = words[0].upper()
        if keyword == "WORKDIR":
            workdir = os.path.join(workdir, words[1])
        elif keyword == "COPY" and not any(w.startswith("--from") for w in words):
            *sources, destination = words[1:]
            target_dir = root + os.path.normpath(os.path.join(workdir, destination))
            for source in sources:
                is_file = os.path.isfile(os.path.join(context, source))
                into_dir = destination.endswith("/") or len(sources) > 1
                target = os.path.join(target_dir, os.path.basename(source)) if is_file and into_dir else target_dir
                _copy(context, source.rstrip("/"), target, patterns)
        elif keyword == "RUN" and "pip" in words and "install" in words and "." in words:
            project = root + workdir
            wheels = os.path.join(root, "wheels")
            subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                            "-w", wheels, project], check=True, capture_output=True)
            for wheel in os.listdir(wheels):
                install(os.path.join(wheels, wheel), site)
            path.append(site)
        elif keyword == "ENV":
            for word in words[1:]:
                name, _, value = word.partition("=")
                if name == "PYTHONPATH":
                    path += [root + p for p in value.split(":") if p]
    return path


def install(wheel: str, site: str) -> None:
    """Installs a wheel (the project's, or a TFX module wheel) into `site` without dependencies."""
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site, wheel],
                   check=True, capture_output=True)


def import_in_image(names: Sequence[str], path: Sequence[str], root: str, own: Sequence[str]) -> Dict[str, str]:
    """Imports `module` or `module:attribute` names in a fresh interpreter; name -> failure (empty: all imported).

    Modules of the `own` top-level packages must come from the image (`root`), not from the checkout.
    """
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    result = subprocess.run([sys.executable, "-c", _PROBE, root, json.dumps(list(names)), json.dumps(list(own))],
                            cwd=root, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
