"""The package's imports point one way (docs/architecture.md): each layer imports only layers below it."""

import ast
from pathlib import Path

import pytest

import sgm_pyro

ROOT = Path(sgm_pyro.__file__).parent
# Each layer and the layers it may import (besides itself and the package's plain modules).
LAYERS = {
    "groups": set(),
    "nn": set(),
    "data": {"groups", "nn"},
    "models": {"groups", "nn", "data"},
    "inference": {"groups", "nn", "data", "models"},
    "analysis": {"groups", "nn", "data", "models", "inference"},
    "experiments": {"groups", "nn", "data", "models", "inference", "analysis"},
    "cli": {"groups", "nn", "data", "models", "inference", "analysis", "experiments"},
}
PLAIN = {"validation", "devices", "checkpoint", "host_memory", "native"}  # low-level modules every layer may use
ABOVE_ALL = {"config"}  # the run configuration reads stage settings; only experiments and the CLI use it


def imported_layers(path: Path) -> set[tuple[str, int]]:
    """The first-level ``sgm_pyro`` modules imported by ``path`` (absolute or relative), with line numbers."""
    package = path.relative_to(ROOT.parent).with_suffix("").parts[:-1]  # e.g. ("sgm_pyro", "models", "priors")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                parts = list(base) + (node.module.split(".") if node.module else [])
                if not node.module:  # "from .. import x": x are modules of base
                    for alias in node.names:
                        found.add((tuple(parts + [alias.name]), node.lineno))
                    continue
            else:
                parts = node.module.split(".") if node.module else []
            found.add((tuple(parts), node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                found.add((tuple(alias.name.split(".")), node.lineno))
    return {(p[1], line) for p, line in found if len(p) > 1 and p[0] == "sgm_pyro"}


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_a_layer_imports_only_the_layers_below_it(layer):
    files = sorted((ROOT / layer).rglob("*.py")) if (ROOT / layer).is_dir() else [ROOT / f"{layer}.py"]
    assert files, layer
    allowed = LAYERS[layer] | {layer} | PLAIN | (ABOVE_ALL if layer in ("experiments", "cli") else set())
    bad = [f"{f.relative_to(ROOT)}:{line} imports sgm_pyro.{mod}"
           for f in files for mod, line in imported_layers(f) if mod not in allowed]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_relative_imports(tmp_path):
    # a models module importing inference, as SGM.fit once did, must be caught
    fake = ROOT / "models" / "_layering_probe.py"
    fake.write_text("def f():\n    from ..inference.iwlb import iwlb\n    return iwlb\n")
    try:
        assert ("inference", 2) in imported_layers(fake)
    finally:
        fake.unlink()


def test_models_fit_through_the_registered_loops():
    from sgm_pyro.inference import fit_sgm
    from sgm_pyro.models.trainers import loop
    assert loop("sgm") is fit_sgm
    with pytest.raises(RuntimeError, match="import sgm_pyro.inference"):
        loop("no-such-loop")
